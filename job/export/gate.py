"""The gates between export and publish.

verify:   the ONNX file loads in ONNX Runtime and, like the reloaded SavedModel, predicts what Keras predicts
          (max |Δprob| within the tolerance and no argmax difference) on the test split and random batches.
quantize: model.int8.onnx, kept only when its test accuracy is within the allowed drop of the float model's.
"""

from pathlib import Path

import numpy as np

from job.errors import ParityError
from job.export.inference import predict
from job.export.parity import compare, parity_inputs, run_onnx
from job.export.quantize import VARIANTS, calibration_images, quantize_int8
from job.export.savedmodel import load_savedmodel
from job.runtime.ort import ort_session
from job.runtime.resources import cpu_has, cpu_model


def verify(
    run_dir: Path, serve, splits, cfg, keras_test_probs, savedmodel_dir: str = "saved_model"
) -> tuple[dict, np.ndarray]:
    """Raises ParityError. Returns the parity report and ONNX Runtime's probabilities on the test split."""
    inputs = parity_inputs(splits.x_test, cfg.seed)
    reference = [keras_test_probs] + [predict(serve, x) for x in inputs[1:]]
    try:
        session = ort_session(run_dir / "model.onnx", cfg.threads)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... classes
        raise ParityError(f"ONNX Runtime cannot load the exported model.onnx ({exc}); nothing was published") from None
    onnx_out = [run_onnx(session, x) for x in inputs]
    saved = load_savedmodel(run_dir / savedmodel_dir)
    saved_out = [predict(saved, x) for x in inputs]
    results = {
        "onnxruntime": compare("onnxruntime", reference, onnx_out),
        "savedmodel": compare("savedmodel", reference, saved_out),
    }
    report = {name: r.as_dict() for name, r in results.items()}
    report["tolerance"] = cfg.parity_tolerance
    report["random_batch_sizes"] = [len(x) for x in inputs[1:]]
    report["onnx_test_accuracy"] = float(np.mean(onnx_out[0].argmax(axis=1) == splits.y_test))
    failed = [r for r in results.values() if not r.ok(cfg.parity_tolerance)]
    if failed:
        worst = failed[0]
        raise ParityError(
            f"{worst.backend} disagrees with Keras: max |dprob| {worst.max_abs_diff:.3g} "
            f"(tolerance {cfg.parity_tolerance:g}), {worst.argmax_mismatches} argmax mismatches "
            f"of {worst.samples}; nothing was published"
        )
    return report, onnx_out[0]


def quantize(
    run_dir: Path, splits, cfg, float_accuracy: float, float_probs: np.ndarray, variant: str = "portable"
) -> dict:
    """model.int8.onnx (portable) or model.int8-vnni.onnx beside model.onnx, removed again when it loses more
    than cfg.int8_max_drop. The VNNI variant is only made where this CPU can measure it (it has VNNI): elsewhere
    its accuracy could not be checked, so it is not published."""
    requires = VARIANTS[variant]["requires"]
    if requires and not cpu_has(requires):
        return {
            "published": False,
            "reason": f"not measured: this CPU has none of {requires.replace('|', ', ')}",
            "requires_cpu_feature": requires,
        }
    calibration = calibration_images(splits.x_train, cfg.seed)
    path = run_dir / VARIANTS[variant]["file"]
    quantize_int8(run_dir / "model.onnx", path, calibration, variant)
    int8_probs = run_onnx(ort_session(path, cfg.threads), splits.x_test)
    accuracy = float(np.mean(int8_probs.argmax(1) == splits.y_test))
    drop = float_accuracy - accuracy
    report = {
        "test_accuracy": accuracy,
        "accuracy_drop": drop,
        "argmax_agreement": float(np.mean(int8_probs.argmax(1) == float_probs.argmax(1))),
        "max_abs_diff": float(np.abs(int8_probs - float_probs).max()),
        "calibration_images": len(calibration),
        "max_drop": cfg.int8_max_drop,
        "published": drop <= cfg.int8_max_drop,
        "bytes": path.stat().st_size,
        "file": path.name,
        "requires_cpu_feature": requires or None,
        "measured_on": cpu_model(),
    }
    if not report["published"]:
        report["reason"] = f"accuracy drop {drop:.4f} exceeds --int8-max-drop {cfg.int8_max_drop}"
        path.unlink()
    return report

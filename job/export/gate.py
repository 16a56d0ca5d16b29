"""The gates between export and publish.

verify:   the ONNX file loads in ONNX Runtime and, like the reloaded SavedModel, predicts what Keras predicts
          (max |Δprob| within the tolerance and no argmax difference) on the test split and random batches.
quantize: model.int8.onnx, kept only when its test accuracy is within the allowed drop of the float model's.
"""

from pathlib import Path

import numpy as np

from job.errors import ParityError
from job.export.inference import predict
from job.export.parity import Parity, compare, parity_inputs, run_onnx
from job.export.quantize import VARIANTS, calibration_images, quantize_int8
from job.export.savedmodel import load_savedmodel
from job.runtime.ort import ort_session
from job.runtime.resources import cpu_has, cpu_model
from job.storage.layout import MODEL_ONNX, SAVEDMODEL_DIRS


def verify(
    run_dir: Path,
    serve,
    x_test: np.ndarray,
    y_test: np.ndarray,
    keras_test_probs: np.ndarray,
    *,
    seed: int,
    threads: int,
    tolerance: float,
    savedmodel_dir: str = SAVEDMODEL_DIRS["runs"],
) -> Parity:
    """Raises ParityError. `seed` draws the random batches; `threads` is ONNX Runtime's (0 = automatic)."""
    inputs = parity_inputs(x_test, seed)
    reference = [keras_test_probs] + [predict(serve, x) for x in inputs[1:]]
    try:
        session = ort_session(run_dir / MODEL_ONNX, threads)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... classes
        raise ParityError(f"ONNX Runtime cannot load the exported model.onnx ({exc}); nothing was published") from None
    onnx_out = [run_onnx(session, x) for x in inputs]
    saved = load_savedmodel(run_dir / savedmodel_dir)
    saved_out = [predict(saved, x) for x in inputs]
    parity = Parity(
        onnxruntime=compare("onnxruntime", reference, onnx_out),
        savedmodel=compare("savedmodel", reference, saved_out),
        tolerance=tolerance,
        random_batch_sizes=[len(x) for x in inputs[1:]],
        onnx_test_accuracy=float(np.mean(onnx_out[0].argmax(axis=1) == y_test)),
        onnx_test_probs=onnx_out[0],
    )
    failed = [r for r in (parity.onnxruntime, parity.savedmodel) if not r.ok(tolerance)]
    if failed:
        worst = failed[0]
        raise ParityError(
            f"{worst.backend} disagrees with Keras: max |dprob| {worst.max_abs_diff:.3g} "
            f"(tolerance {tolerance:g}), {worst.argmax_mismatches} argmax mismatches "
            f"of {worst.samples}; nothing was published"
        )
    return parity


def quantize(
    run_dir: Path,
    x_calibrate: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    float_probs: np.ndarray,
    *,
    seed: int,
    threads: int,
    max_drop: float,
    variant: str = "portable",
) -> dict:
    """model.int8.onnx (portable) or model.int8-vnni.onnx beside model.onnx, calibrated on a sample of
    `x_calibrate` (training images, never the test split), removed again when its test accuracy is more than
    `max_drop` below the float model's (`float_probs`: ONNX Runtime's float probabilities on `x_test`). The VNNI
    variant is only made where this CPU can measure it (it has VNNI): elsewhere its accuracy could not be checked,
    so it is not published. Returns metrics.json's record of it."""
    requires = VARIANTS[variant]["requires"]
    if requires and not cpu_has(requires):
        return {
            "published": False,
            "reason": f"not measured: this CPU has none of {requires.replace('|', ', ')}",
            "requires_cpu_feature": requires,
        }
    calibration = calibration_images(x_calibrate, seed)
    path = run_dir / VARIANTS[variant]["file"]
    quantize_int8(run_dir / MODEL_ONNX, path, calibration, variant)
    int8_probs = run_onnx(ort_session(path, threads), x_test)
    accuracy = float(np.mean(int8_probs.argmax(1) == y_test))
    drop = float(np.mean(float_probs.argmax(1) == y_test)) - accuracy
    published, size = drop <= max_drop, path.stat().st_size
    if not published:
        path.unlink()
    return {
        "test_accuracy": accuracy,
        "accuracy_drop": drop,
        "argmax_agreement": float(np.mean(int8_probs.argmax(1) == float_probs.argmax(1))),
        "max_abs_diff": float(np.abs(int8_probs - float_probs).max()),
        "calibration_images": len(calibration),
        "max_drop": max_drop,
        "published": published,
        "bytes": size,
        "file": path.name,
        "requires_cpu_feature": requires or None,
        "measured_on": cpu_model(),
        **({} if published else {"reason": f"accuracy drop {drop:.4f} exceeds --int8-max-drop {max_drop}"}),
    }

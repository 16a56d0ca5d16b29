"""ONNX Runtime images/s of a published run's float and INT8 models, at batch 1, 64 and 256, with this
machine's CPUs, and the INT8 variants' accuracy from the run's own metrics.json (measured by the job on its
test split). No TensorFlow unless --legacy or --relu-reference.

    python -m bench.int8 RUN_DIR [--out int8.json]
    python -m bench.int8 RUN_DIR --legacy --relu-reference [--cache-dir DIR] [--out int8.json]

--legacy rebuilds, from the run's model.keras, the files the job made before its GELU rewrite (model.onnx as
tf2onnx writes it: GELU as seven elementwise nodes; INT8 with every op quantized; INT8 with only
Conv/MatMul/Gemm quantized) and measures their accuracy on the run's holdout (the same split, loaded with the
run's config.json; calibration on the same training images as the job). --relu-reference adds the run's
recipe with ReLU (same width and TTA), trained through the job on two batches and exported as the job exports,
for float speed (speed does not depend on the weights). Models are timed alternately in one process, several rounds, median: on a shared machine only the
ratios within one run mean anything. Besides wall-clock images/s with all CPUs, images per CPU-second with one
thread at batch 256 (process CPU time: much less sensitive to other load on the machine).
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

FILES = {
    "float": "model.onnx",
    "int8 portable (7-bit weights)": "model.int8.onnx",
    "int8 vnni (8-bit weights)": "model.int8-vnni.onnx",
}
BATCHES = (1, 64, 256)
BATCHES_S = [str(b) for b in BATCHES]


def _batch(batch: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8)


def images_per_second(session, batch: int, seconds: float = 3.0) -> float:
    x = _batch(batch)
    session.run(None, {"image": x})  # warm-up
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        session.run(None, {"image": x})
        done += batch
    return done / (time.perf_counter() - t0)


def images_per_cpu_second(session, batch: int, seconds: float = 1.5) -> float:
    x = _batch(batch)
    done, c0 = 0, time.process_time()
    while time.process_time() - c0 < seconds:
        session.run(None, {"image": x})
        done += batch
    return done / (time.process_time() - c0)


def _legacy_files(run_dir: Path, folder: Path, cache_dir: str) -> tuple[dict, dict]:
    """The files the job made before the GELU rewrite, and the holdout accuracy of every file."""
    import keras
    import onnx
    import tf2onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from job import config, stages
    from job.contract import OPSET
    from job.export.inference import inference_function
    from job.export.onnx_graph import tanh_form
    from job.export.parity import run_onnx
    from job.export.quantize import _Calibration, calibration_images
    from job.runtime.ort import ort_session

    cfg = config.resolve({"cache_dir": cache_dir or None}, env={}, config_file=str(run_dir / "config.json"))
    splits = stages.data(cfg.dataset, cfg.publishing.s3)
    serve = inference_function(keras.models.load_model(run_dir / "model.keras"), cfg.tta_level)
    proto, _ = tf2onnx.convert.from_function(serve, input_signature=serve.input_signature, opset=OPSET)
    onnx.save(proto, folder / "legacy.onnx")
    calibration = calibration_images(splits.x_train, cfg.seed)
    quant_pre_process(str(folder / "legacy.onnx"), str(folder / "legacy.pre.onnx"), skip_symbolic_shape=True)
    rewritten = onnx.load(folder / "legacy.pre.onnx")
    tanh_form(rewritten)
    onnx.save(rewritten, folder / "tanh.pre.onnx")
    for name, source, ops in (("legacy.int8.onnx", "legacy.pre.onnx", None), ("cmg.int8.onnx", "tanh.pre.onnx", True)):
        quantize_static(
            str(folder / source),
            str(folder / name),
            _Calibration(calibration),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv", "MatMul", "Gemm"] if ops else None,
            per_channel=True,
            reduce_range=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    files = {
        "float, GELU as tf2onnx writes it (before)": folder / "legacy.onnx",
        "int8, every op quantized (before)": folder / "legacy.int8.onnx",
        "int8, only Conv/MatMul/Gemm quantized": folder / "cmg.int8.onnx",
    }
    accuracy = {}
    for name, path in {**{k: run_dir / v for k, v in FILES.items()}, **files}.items():
        if path.is_file():
            probs = run_onnx(ort_session(path), splits.x_test)
            accuracy[name] = float(np.mean(probs.argmax(1) == splits.y_test))
    return files, accuracy


def _relu_reference(folder: Path, cfg_json: dict) -> Path:
    """The same run's recipe with ReLU, trained through the job on two batches (its speed, not its accuracy, is
    what is compared), exported as the job exports."""
    from bench.throughput import configs_for, measure
    from job import contract
    from job.export.inference import inference_function
    from job.export.onnx_export import export_onnx

    same = {name: cfg_json[name] for name in ("data", "width", "bn_momentum", "tta_level") if name in cfg_json}
    _, cfg = configs_for(cfg_json.get("preset", "fast"), 2, 1, {**same, "activation": "relu"})
    net = measure(cfg)["net"]
    meta = contract.metadata(
        [f"c{i}" for i in range(10)], run_id="relu", preset="", test_accuracy=0, tta_level=cfg.tta_level, versions={}
    )
    export_onnx(inference_function(net, cfg.tta_level), folder / "relu.onnx", meta)
    return folder / "relu.onnx"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir", type=Path)
    p.add_argument("--out", type=Path)
    p.add_argument("--legacy", action="store_true", help="also the files made before the GELU rewrite (needs TF)")
    p.add_argument(
        "--relu-reference",
        action="store_true",
        help="also the same recipe with ReLU, trained on two batches through the job (needs TF and the data)",
    )
    p.add_argument("--cache-dir", default="", help="decode cache for --legacy's holdout (default: the run's)")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    from job.runtime.ort import ort_session
    from job.runtime.resources import available_cpus, cpu_flags, cpu_model

    metrics = json.loads((args.run_dir / "metrics.json").read_text())
    cfg_json = (
        json.loads((args.run_dir / "config.json").read_text()) if (args.run_dir / "config.json").is_file() else {}
    )
    int8 = metrics.get("int8", {})
    accuracy = {
        "float": metrics["onnx_test_accuracy"],
        "int8 portable (7-bit weights)": int8.get("test_accuracy"),
        "int8 vnni (8-bit weights)": int8.get("vnni", {}).get("test_accuracy"),
    }
    files = {name: args.run_dir / file for name, file in FILES.items() if (args.run_dir / file).is_file()}
    with tempfile.TemporaryDirectory() as tmp:
        if args.legacy:
            extra, measured = _legacy_files(args.run_dir, Path(tmp), args.cache_dir)
            files.update(extra)
            accuracy.update(measured)
        if args.relu_reference:
            files["float, ReLU fast_net (untrained, same width and TTA)"] = _relu_reference(Path(tmp), cfg_json)
        sessions = {name: ort_session(path) for name, path in files.items()}
        single = {name: ort_session(path, threads=1) for name, path in files.items()}
        wall: dict = {name: {str(b): [] for b in BATCHES} for name in files}
        cpu: dict = {name: [] for name in files}
        for _ in range(args.rounds):  # alternating: every model sees the same load, round by round
            for name in files:
                for b in BATCHES:
                    wall[name][str(b)].append(images_per_second(sessions[name], b, seconds=1.0))
                cpu[name].append(images_per_cpu_second(single[name], 256))
    result = {
        "cpu": cpu_model(),
        "vnni": bool({"avx512_vnni", "avx_vnni"} & cpu_flags()),
        "threads": available_cpus(),
        "model": metrics["preset"],
        "rounds": args.rounds,
        "variants": {},
    }
    for name in files:
        result["variants"][name] = {
            "images_per_second": {b: round(float(np.median(v)), 1) for b, v in wall[name].items()},
            "images_per_cpu_second_1_thread_batch_256": round(float(np.median(cpu[name])), 1),
            "test_accuracy": accuracy.get(name),
        }
    base = result["variants"]["float"]
    for v in result["variants"].values():
        v["speedup"] = {b: round(v["images_per_second"][b] / base["images_per_second"][b], 2) for b in BATCHES_S}
        v["speedup_cpu_time_batch_256"] = round(
            v["images_per_cpu_second_1_thread_batch_256"] / base["images_per_cpu_second_1_thread_batch_256"], 2
        )
        if v["test_accuracy"] is not None:
            v["accuracy_drop"] = round(accuracy["float"] - v["test_accuracy"], 4)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""ONNX Runtime images/s of a published run's float and INT8 models, at batch 1, 64 and 256, with this
machine's CPUs, and the INT8 variants' accuracy from the run's own metrics.json (measured by the job on its
test split). No TensorFlow.

    python -m bench.int8 RUN_DIR [--out int8.json]
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np

FILES = {
    "float": "model.onnx",
    "int8 portable (7-bit weights)": "model.int8.onnx",
    "int8 vnni (8-bit weights)": "model.int8-vnni.onnx",
}


def images_per_second(session, batch: int, seconds: float = 3.0) -> float:
    x = np.random.default_rng(0).integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8)
    session.run(None, {"image": x})  # warm-up
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        session.run(None, {"image": x})
        done += batch
    return done / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir", type=Path)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    from job.runtime.ort import ort_session
    from job.runtime.resources import available_cpus, cpu_flags, cpu_model

    metrics = json.loads((args.run_dir / "metrics.json").read_text())
    int8 = metrics.get("int8", {})
    accuracy = {
        "float": metrics["onnx_test_accuracy"],
        "int8 portable (7-bit weights)": int8.get("test_accuracy"),
        "int8 vnni (8-bit weights)": int8.get("vnni", {}).get("test_accuracy"),
    }
    result = {
        "cpu": cpu_model(),
        "vnni": bool({"avx512_vnni", "avx_vnni"} & cpu_flags()),
        "threads": available_cpus(),
        "model": metrics["preset"],
        "variants": {},
    }
    for name, file in FILES.items():
        if (args.run_dir / file).is_file():
            session = ort_session(args.run_dir / file)
            speed = {str(b): round(images_per_second(session, b), 1) for b in (1, 64, 256)}
            result["variants"][name] = {"images_per_second": speed, "test_accuracy": accuracy[name]}
    base = result["variants"]["float"]["images_per_second"]
    for v in result["variants"].values():
        v["speedup"] = {b: round(v["images_per_second"][b] / base[b], 2) for b in base}
        if v["test_accuracy"] is not None:
            v["accuracy_drop"] = round(accuracy["float"] - v["test_accuracy"], 4)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

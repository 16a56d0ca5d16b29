"""One preset's training curve, in its own process (so peak RSS is its own):
test accuracy after every epoch against training wall time (the clock stops while it measures).

    python -m bench.train_curve --preset fast --out curve.json [--epochs N] [--limit N] [--export DIR]
                                [--set width=32 ...]

The test split is only measured here, never used to choose anything.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int)
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--data", default="auto")
    p.add_argument("--export", help="also export the model (SavedModel + ONNX + INT8) into this folder")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a config field, e.g. --set width=32 (repeatable)",
    )
    args = p.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from job import config, pipeline
    from job.runtime.telemetry import Timer

    cli = {"preset": args.preset, "data": args.data, "limit": args.limit, "run_id": f"bench-{args.preset}"}
    if args.epochs:
        cli["epochs"] = args.epochs
    for item in args.set:
        name, _, value = item.partition("=")
        cli[name.replace("-", "_")] = value
    cfg = config.resolve(cli, env={})
    splits, threads, _ = pipeline.prepare(cfg, Timer())  # data, threads and seeds, as the job does

    from job import stages

    curve = test_curve(cfg, splits)
    trained = stages.train(cfg.training, splits, callbacks=[curve])  # the job's train stage, plus the curve
    train_seconds = curve.points[-1]["seconds"]
    images = len(splits.y_train) * cfg.epochs
    record = {
        "preset": cfg.preset,
        "overrides": args.set,
        "model": cfg.model,
        "width": cfg.width,
        "epochs": cfg.epochs,
        "precision": cfg.precision,
        "batch_size": cfg.batch_size,
        "train_images": len(splits.y_train),
        "test_images": len(splits.y_test),
        "threads": threads,
        "curve": curve.points,
        "train_seconds": train_seconds,
        "seconds_per_epoch": round(train_seconds / cfg.epochs, 2),
        "images_per_second": round(images / train_seconds, 1),
        "final_test_accuracy": curve.points[-1]["test_accuracy"],
        "forward_flops_per_image": forward_flops(trained.net),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if args.export:
        record["exported"] = export_all(trained.net, cfg, splits, Path(args.export))  # already the float32 copy
    Path(args.out).write_text(json.dumps(record, indent=2))


def test_curve(cfg, splits):
    """A Keras callback that measures test accuracy (the exported model's: float32 copy, TTA level) after every
    epoch, with the training clock and the idle-CPU count paused meanwhile; its `points` are the curve."""
    import keras
    import numpy as np

    from job.export.inference import inference_function, predict
    from job.train.build import inference_copy

    class Curve(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.points, self.paused, self.started = [], 0.0, None
            self.idle_at_start, self.idle_paused = 0.0, 0.0

        def on_train_begin(self, logs=None):
            if self.started is None:
                self.started = time.perf_counter()
                self.idle_at_start = idle_cpu_seconds()

        def on_epoch_end(self, epoch, logs=None):
            t0, idle_before_eval = time.perf_counter(), idle_cpu_seconds()
            elapsed = t0 - self.started - self.paused
            evaluated = inference_copy(self.model, cfg.arch, splits.num_classes)
            probs = predict(inference_function(evaluated, cfg.tta_level), splits.x_test)
            acc = float(np.mean(probs.argmax(1) == splits.y_test))
            # CPU time nobody used while this process trained: with every core busy it stays near 0; where
            # it grows, the process waited (this found a tf.data teardown stall) or the host held the CPUs back.
            idle = idle_before_eval - self.idle_at_start - self.idle_paused
            point = {"epoch": epoch + 1, "seconds": round(elapsed, 2), "test_accuracy": acc}
            self.points.append({**point, "idle_cpu_seconds": round(idle, 1)})
            print(
                f"[bench {cfg.preset}] epoch {epoch + 1}: {elapsed:.1f}s train, test accuracy {acc:.4f}, "
                f"idle CPU {idle:.1f}s",
                flush=True,
            )
            self.paused += time.perf_counter() - t0
            self.idle_paused += idle_cpu_seconds() - idle_before_eval

    return Curve()


def idle_cpu_seconds() -> float:
    """Seconds all CPUs of this machine have spent idle since boot (/proc/stat; 0 where it is missing)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        return (int(fields[4]) + int(fields[5])) / os.sysconf("SC_CLK_TCK")  # idle + iowait
    except (OSError, IndexError, ValueError):
        return 0.0


def forward_flops(model) -> int:
    """Multiply-adds x 2 of the convolutions and dense layers for one 32x32 image (the bulk of the work)."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, h, w, cout = layer.output.shape
            kh, kw = layer.kernel_size
            total += 2 * h * w * cout * kh * kw * layer.input.shape[-1]
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * layer.input.shape[-1] * layer.units
    return int(total)


def export_all(model, cfg, splits, folder: Path) -> dict:
    """The job's own export (job.export.bundle), plus INT8 and the test arrays for the inference bench."""
    import numpy as np

    from job.export.bundle import export_model
    from job.export.inference import inference_function
    from job.export.quantize import calibration_images, quantize_int8

    folder.mkdir(parents=True, exist_ok=True)
    export_model(
        model,
        inference_function(model, cfg.tta_level),
        folder,
        class_names=splits.class_names,
        run_id=cfg.run_id,
        preset=cfg.preset,
        test_accuracy=0.0,
        tta_level=cfg.tta_level,
        versions={},
    )
    from job.runtime.resources import VNNI, cpu_has

    calibration = calibration_images(splits.x_train, cfg.seed)
    quantize_int8(folder / "model.onnx", folder / "model.int8.onnx", calibration)
    if cpu_has(VNNI):  # the 8-bit-weight variant is only correct (and measurable) with VNNI
        quantize_int8(folder / "model.onnx", folder / "model.int8-vnni.onnx", calibration, "vnni")
    np.save(folder / "x_test.npy", splits.x_test)
    np.save(folder / "y_test.npy", splits.y_test)
    return {"folder": str(folder), "tta_level": cfg.tta_level}


if __name__ == "__main__":
    main()

"""Steady-state training speed of one preset, in its own process, through the job itself: `pipeline.prepare`
(data, threads, seeds) and `stages.train` (the job's model, optimizer, input pipeline, precision and epoch
loop) on a stratified sample of the job's data, `--steps` optimizer steps per epoch for `--epochs` epochs.
Images/s is the median over the epochs after the first (the first traces and compiles). Cheap enough to run
for every preset on any machine, so the bench shows how long each preset would take there even where its full
training curve is not run (`fast-long` on 2 AVX2 cores: hours).

    python -m bench.throughput --preset fast --out speed.json [--steps N] [--epochs E] [--set train_layers=stock ...]

Every switch is a config field (`--set NAME=VALUE`), as on the job's command line: nothing here builds a model,
an optimizer or a dataset of its own.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
from pathlib import Path

CIFAR10_TRAIN_IMAGES = 50_000  # the shared data; the job trains on what its test and validation splits leave


def configs_for(preset: str, steps: int, epochs: int, overrides: dict):
    """(the run as configured, the measured one): the preset's config, and the same on just enough images for
    `steps` full batches per epoch with no validation split (an epoch's seconds are then training alone)."""
    from job import config

    run_id = {"run_id": f"throughput-{preset}"}
    full = config.resolve({"preset": preset, **run_id, **overrides}, env={})
    train_share = (1 - full.test_fraction) * (1 - full.val_fraction if "val_fraction" in overrides else 1)
    limit = math.ceil((steps + 0.5) * full.batch_size / train_share)
    settings = {"val_fraction": 0, "limit": limit, "epochs": epochs, **run_id, **overrides}
    return full, config.resolve({"preset": preset, **settings}, env={})


def measure(cfg) -> dict:
    """Train through the job; images/s of the steady epochs."""
    from job import pipeline, stages
    from job.runtime.telemetry import Timer
    from job.train.optim import steps_per_epoch

    splits, threads, _ = pipeline.prepare(cfg, Timer())
    trained = stages.train(cfg.training, splits)
    steps = steps_per_epoch(len(splits.y_train), cfg.batch_size, cfg.drop_last)
    images = min(steps * cfg.batch_size, len(splits.y_train))
    seconds = [row["seconds"] for row in trained.history]
    steady = statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0]
    return {
        "threads": threads,
        "images_per_epoch": images,
        "epoch_seconds": seconds,
        "ips": images / steady,
        "net": trained.net,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=16, help="optimizer steps per epoch")
    p.add_argument("--epochs", type=int, default=3, help="epochs (the first one is not timed)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="override a config field")
    args = p.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.WARNING)

    overrides = dict(item.split("=", 1) for item in args.set)
    full, cfg = configs_for(args.preset, args.steps, max(args.epochs, 2), overrides)
    result = measure(cfg)

    from bench.train_curve import forward_flops
    from job.runtime.resources import cpu_model

    ips = result["ips"]
    epoch_s = CIFAR10_TRAIN_IMAGES * (1 - full.test_fraction) * (1 - full.val_fraction) / ips
    record = {
        "preset": cfg.preset,
        "overrides": args.set,
        "cpu": cpu_model(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "model": cfg.model,
        "width": cfg.width,
        "batch_size": cfg.batch_size,
        "precision": cfg.precision,
        "train_layers": cfg.train_layers,
        "threads": result["threads"],
        "images_per_epoch": result["images_per_epoch"],
        "epoch_seconds": result["epoch_seconds"],
        "images_per_second": round(ips, 1),
        "projected_epoch_seconds": round(epoch_s, 1),
        "projected_train_seconds": round(epoch_s * full.epochs, 1),
        "epochs": full.epochs,
        "forward_flops_per_image": forward_flops(result["net"]),
    }
    print(
        f"[bench throughput] {cfg.preset}: {ips:.0f} images/s in {cfg.precision} ({cfg.train_layers} layers), about "
        f"{epoch_s:.0f} s per epoch, {epoch_s * full.epochs / 60:.1f} min for {full.epochs} epochs",
        flush=True,
    )
    Path(args.out).write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()

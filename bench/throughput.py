"""Steady-state training speed of one preset, in its own process: images/s over a few optimizer steps on
random images, with the job's own model, optimizer, input pipeline and precision. Cheap enough to run for
every preset on any machine, so the bench shows how long each preset would take there even where its full
training curve is not run (`fast-long` on 2 AVX2 cores: hours).

    python -m bench.throughput --preset fast --out speed.json [--steps N] [--set activation=gelu ...]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

CIFAR10_TRAIN_IMAGES = 50_000  # the shared data; the job trains on what its test and validation splits leave


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=8, help="timed optimizer steps (after 3 untimed)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="override a config field")
    p.add_argument("--jit", action="store_true", help="compile the train step with XLA (off in the job on CPU)")
    args = p.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from job import config
    from job.train.threads import configure_tensorflow

    overrides = dict(item.split("=", 1) for item in args.set)
    cfg = config.resolve({"preset": args.preset, "run_id": f"throughput-{args.preset}", **overrides}, env={})
    threads = configure_tensorflow(cfg.threads, cfg.inter_op_threads)

    import keras
    import numpy as np

    from bench.train_curve import forward_flops
    from job.train.build import compile_model, seed_everything
    from job.train.input import Augmentation, make_dataset

    seed_everything(cfg.seed, cfg.deterministic)
    warmup = 3
    n = cfg.batch_size * (warmup + args.steps)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n)
    net = compile_model(cfg, 10, x)
    net.jit_compile = args.jit  # Keras' "auto" leaves XLA off on CPU-only machines
    augment = Augmentation(cfg.crop_padding, cfg.seed, 0) if cfg.augment else None
    ds = make_dataset(x, y, 10, cfg.batch_size, shuffle_seed=cfg.seed, augment=augment)

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == warmup - 1:
                self.start = time.perf_counter()

        def on_train_end(self, logs=None):
            self.seconds = time.perf_counter() - self.start

    clock = Clock()
    net.fit(ds, epochs=1, verbose=0, callbacks=[clock])
    ips = args.steps * cfg.batch_size / clock.seconds
    epoch_s = CIFAR10_TRAIN_IMAGES * (1 - cfg.test_fraction) * (1 - cfg.val_fraction) / ips
    record = {
        "preset": cfg.preset,
        "overrides": args.set,
        "jit_compile": args.jit,
        "model": cfg.model,
        "width": cfg.width,
        "batch_size": cfg.batch_size,
        "precision": cfg.precision,
        "threads": threads,
        "timed_steps": args.steps,
        "images_per_second": round(ips, 1),
        "projected_epoch_seconds": round(epoch_s, 1),
        "projected_train_seconds": round(epoch_s * cfg.epochs, 1),
        "epochs": cfg.epochs,
        "forward_flops_per_image": forward_flops(net),
    }
    print(
        f"[bench throughput] {cfg.preset}: {ips:.0f} images/s in {cfg.precision}, about {epoch_s:.0f} s per "
        f"epoch, {epoch_s * cfg.epochs / 60:.1f} min for {cfg.epochs} epochs",
        flush=True,
    )
    Path(args.out).write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()

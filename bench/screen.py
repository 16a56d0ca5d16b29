"""Screening: recipe variants judged on the validation split, paired by seed, at reduced scale.

    python -m bench.screen --out screen.json --set width=32 --set epochs=4 --seeds 1,2 \
        --variant "base: bn_momentum=0.4 drop_last=0 learning_rate=0.384 lookahead_bn_stats=0" \
        --variant "bn0.6: drop_last=0 ..."

Each (variant, seed) trains in its own process, one after another (two cores fit one training), through the
job (`pipeline.prepare`, `stages.train`): a setting `name=value` overrides a config field, as on the job's
command line (every recipe switch is one). The seed picks the split too, so a pair shares its validation images.
Reported per run: validation accuracy per epoch (no TTA), the final validation accuracy without and with mirror
TTA, and seconds per epoch (comparable only within one run of this script, on one machine). The test split is
never read.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, settings = text.partition(":")
    return name.strip(), settings.split()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--preset", default="fast")
    p.add_argument("--seeds", default="1,2")
    p.add_argument("--set", action="append", default=[], help="NAME=VALUE for every variant (the scale)")
    p.add_argument("--variant", action="append", default=[], help="'name: NAME=VALUE ...' (repeatable)")
    p.add_argument("--one", nargs="*", help=argparse.SUPPRESS)  # internal: one training, JSON on stdout
    args = p.parse_args()
    if args.one is not None:
        print(json.dumps(train_one(args.preset, args.one)))
        return
    results = json.loads(args.out.read_text()) if args.out.exists() else {"runs": []}
    done = {(r["variant"], r["seed"]) for r in results["runs"]}
    for text in args.variant:
        name, settings = parse_variant(text)
        for seed in args.seeds.split(","):
            if (name, int(seed)) in done:
                continue
            cmd = [sys.executable, "-m", "bench.screen", "--preset", args.preset, "--out", str(args.out), "--one"]
            cmd += [*args.set, *settings, f"seed={seed}"]
            t0 = time.time()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.stderr.write(proc.stderr[-3000:])
                raise SystemExit(f"screen: variant {name} seed {seed} failed")
            run = {"variant": name, "settings": settings, "seed": int(seed), **json.loads(proc.stdout.splitlines()[-1])}
            run["wall_seconds"] = round(time.time() - t0, 1)
            results["runs"].append(run)
            results["scale"], results["preset"], results["machine"] = args.set, args.preset, machine()
            args.out.write_text(json.dumps(results, indent=1) + "\n")
            print(
                f"[screen] {name} seed {seed}: val {run['val_accuracy']:.4f} (mirror {run['val_accuracy_mirror']:.4f}) "
                f"{run['seconds_per_epoch']:.1f}s/epoch",
                flush=True,
            )
    print(table(results))


def machine() -> str:
    from job.runtime.resources import cpu_model

    return cpu_model()


def train_one(preset: str, settings: list[str]) -> dict:
    """One training through the job (`pipeline.prepare`, `stages.train`), judged on the validation split."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from job import config, pipeline, stages
    from job.runtime.telemetry import Timer

    cli: dict = {"preset": preset, "run_id": "screen"}
    for item in settings:
        name, _, value = item.partition("=")
        if "." in name:
            raise SystemExit(f"error: screen setting {item!r}: every recipe switch is a config field; use NAME=VALUE")
        cli[name.replace("-", "_")] = value
    cfg = config.resolve(cli, env={})
    splits, _, _ = pipeline.prepare(cfg, Timer())
    import numpy as np

    from job.export.inference import inference_function, predict

    trained = stages.train(cfg.training, splits)
    mirror = predict(inference_function(trained.net, 1), splits.x_val)
    plain = predict(inference_function(trained.net, 0), splits.x_val)
    seconds = [row["seconds"] for row in trained.history]
    return {
        "val_images": len(splits.y_val),
        "train_images": len(splits.y_train),
        "val_per_epoch": [round(row.get("val_accuracy", float("nan")), 4) for row in trained.history],
        "val_accuracy": float(np.mean(plain.argmax(1) == splits.y_val)),
        "val_accuracy_mirror": float(np.mean(mirror.argmax(1) == splits.y_val)),
        "seconds_per_epoch": round(sum(seconds[1:]) / max(len(seconds) - 1, 1), 2),  # the first one compiles
    }


def table(results: dict) -> str:
    """Markdown: each variant's mean over seeds and its paired difference from the first variant."""
    runs = results["runs"]
    names = list(dict.fromkeys(r["variant"] for r in runs))
    by = {(r["variant"], r["seed"]): r for r in runs}
    base = names[0]
    lines = [
        "| variant | seeds | val (no TTA) | val (mirror) | Δ mirror vs " + base + " (paired) | s/epoch |",
        "|---|---|---|---|---|---|",
    ]
    for name in names:
        mine = [r for r in runs if r["variant"] == name]
        deltas = [
            r["val_accuracy_mirror"] - by[(base, r["seed"])]["val_accuracy_mirror"]
            for r in mine
            if (base, r["seed"]) in by
        ]

        def cells(values, fmt):
            return ", ".join(fmt.format(v) for v in values)

        lines.append(
            f"| {name} | {cells([r['seed'] for r in mine], '{}')} "
            f"| {cells([100 * r['val_accuracy'] for r in mine], '{:.2f}')} "
            f"| {cells([100 * r['val_accuracy_mirror'] for r in mine], '{:.2f}')} "
            f"| {cells([100 * d for d in deltas], '{:+.2f}')} "
            f"| {cells([r['seconds_per_epoch'] for r in mine], '{:.1f}')} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()

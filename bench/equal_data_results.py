"""Gather the equal-data runs (issue 34, item 4) into one results file and print the docs table: the reference
recipe (bench/reference/airbench94_train.py --out ROOT/runs/ref-sS.json) and the job's `fast` preset
(ROOT/runs/fast-sS/ with `python -m bench.tta ... --out ROOT/runs/fast-sS-tta.json`), both trained on
ROOT/train and judged on ROOT/test (from `python -m bench.equal_data --out ROOT`). Runs not finished yet are
recorded as pending; rerun it when they are.

    python -m bench.equal_data_results --root /tmp/equal --out bench/results/DATE-MACHINE-equal-data.json
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

LEVELS = ("tta0", "tta1", "tta2")
JOB_MODES = {"tta0": "none", "tta1": "mirror", "tta2": "mirror+translate"}


def chain_loads(log: Path, name: str) -> dict:
    """start/done times and load averages of one run, from the runner's log lines 'TIME NAME EVENT ... load=A B C'."""
    events = {}
    for line in log.read_text().splitlines() if log.exists() else []:
        m = re.match(r"(\S+) (?:\(\S+\) )?(\S+) (start|done|tta done).* load=(.*)", line)  # later lines win
        if m and m.group(2) == name:
            events[m.group(3)] = {"time": m.group(1), "loadavg_1_5_15": [float(x) for x in m.group(4).split()]}
    return events


def reference_run(path: Path) -> dict | None:
    if not path.exists():
        return None
    r = json.loads(path.read_text())
    keep = ("epochs", "train_seconds", "threads", "precision", "torch", "train_images", "test_images", "epochs_log")
    return {
        **r["test_accuracy"],
        **{k: r[k] for k in keep},
        "loadavg_during": [r["loadavg_before"], r["loadavg_after"]],
    }


def fast_run(run_dir: Path, tta: Path) -> dict | None:
    if not (run_dir / "metrics.json").exists() or not tta.exists():
        return None
    m, modes = json.loads((run_dir / "metrics.json").read_text()), json.loads(tta.read_text())["modes"]
    return {
        **{level: modes[mode]["test_accuracy"] for level, mode in JOB_MODES.items()},
        "job_reported_test_accuracy": m["test_accuracy"],
        "epochs": m["training"]["epochs"],
        "train_seconds": m["training"]["seconds"],
        "threads": m.get("threads"),
        "precision": m["training"]["precision"],
        "train_images": m["data"]["sizes"]["train"],
        "test_images": m["data"]["sizes"]["test"],
        "test_fingerprint": m["data"].get("test_fingerprint"),
    }


def summarize(runs: list[dict]) -> dict:
    summary = {}
    for side in ("reference", "fast"):
        done = [r for r in runs if r["side"] == side and "tta1" in r]
        summary[side] = {"runs": len(done), "seeds": [r["seed"] for r in done]}
        summary[side].update({f"mean_{k}": round(statistics.mean(r[k] for r in done), 4) for k in LEVELS if done})
    if summary["reference"]["runs"] and summary["fast"]["runs"]:
        for k in LEVELS:
            diff = summary["fast"][f"mean_{k}"] - summary["reference"][f"mean_{k}"]
            summary[f"fast_minus_reference_{k}_points"] = round(100 * diff, 2)
    return summary


def table(summary: dict) -> str:
    rows = ["| | runs (seeds) | TTA 0 | TTA 1 (mirror) | TTA 2 (mirror + translate) |", "|---|---|---|---|---|"]
    for side, label in (("reference", "reference (airbench94 CPU port)"), ("fast", "`fast`")):
        s = summary[side]
        cells = [f"{100 * s[f'mean_{k}']:.2f}%" if f"mean_{k}" in s else "pending" for k in LEVELS]
        rows.append(f"| {label} | {s['runs']} ({', '.join(map(str, s['seeds']))}) | " + " | ".join(cells) + " |")
    if "fast_minus_reference_tta1_points" in summary:
        cells = [f"{summary[f'fast_minus_reference_{k}_points']:+.2f}" for k in LEVELS]
        rows.append("| `fast` − reference (points) | | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=Path("/tmp/equal"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--cpu", default="", help="the CPU, in words, for the record")
    p.add_argument("--note", action="append", default=[], help="a line for the record (how the runs were made)")
    args = p.parse_args()
    runs_dir, log = args.root / "runs", args.root / "logs" / "chain.log"
    runs = []
    for seed in args.seeds:
        for side, result in (
            ("reference", reference_run(runs_dir / f"ref-s{seed}.json")),
            ("fast", fast_run(runs_dir / f"fast-s{seed}", runs_dir / f"fast-s{seed}-tta.json")),
        ):
            name = f"{'ref' if side == 'reference' else 'fast'}-s{seed}"
            runs.append(
                {"side": side, "seed": seed, **(result or {"status": "pending"}), "chain": chain_loads(log, name)}
            )
    summary = summarize(runs)
    record = {"cpu": args.cpu, "root": str(args.root), "notes": args.note, "summary": summary, "runs": runs}
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(table(summary))


if __name__ == "__main__":
    main()

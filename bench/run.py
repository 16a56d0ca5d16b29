"""`make bench`: training, inference and data-loading figures side by side, on this machine, in one run.

    python -m bench.run            # full: seed, fast-short, fast, fast-long  (about 70 minutes on 2 AMX cores)
    python -m bench.run --quick    # a few minutes: 10k-image subsample, 2 epochs per preset
    python -m bench.run --presets seed,fast-short   # full curves of some presets only (slow CPUs)
    python -m bench.run --merge RESULTS.json CURVE.json  # add a curve run separately with bench.train_curve

Every preset's steady-state training speed is measured in any case (bench/throughput.py).

Writes bench/results/<date>-<machine>.json, <date>-<machine>-time_to_accuracy.png and
<date>-<machine>-inference.png (machine: CPU model, its best vector unit, CPUs available). Benchmarks are
never part of the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.inference import time_inference
from bench.plots import THRESHOLDS, plot

RESULTS = Path(__file__).resolve().parent / "results"
ALL_PRESETS = ("seed", "fast-short", "fast", "fast-long")


def machine() -> dict:
    from job.runtime.resources import auto_precision, available_cpus, cpu_flags, cpu_model

    info = {"python": platform.python_version(), "cpus_available": available_cpus(), "cpu_count": os.cpu_count()}
    flags = cpu_flags()
    info["simd"] = "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "sse"
    info["fma"] = "fma" in flags
    info["amx_bf16"] = "amx_bf16" in flags
    info["auto_precision"] = auto_precision(flags)[0]
    info["cpu_model"] = cpu_model()
    try:  # the clock, for the peak FLOP/s below (the bench's alone)
        info["cpu_mhz"] = float(re.search(r"cpu MHz\s*:\s*([\d.]+)", Path("/proc/cpuinfo").read_text()).group(1))
    except (OSError, AttributeError):
        pass
    info["tag"] = machine_tag(info)
    # float32 FLOP/cycle per core: 2 FMA units x lanes x 2 (multiply + add)
    lanes = {"avx512": 16, "avx2": 8}.get(info.get("simd"), 4)
    per_cycle = 2 * lanes * 2 if info.get("fma") else lanes
    if "cpu_mhz" in info:
        info["peak_gflops_fp32"] = round(info["cpus_available"] * info["cpu_mhz"] / 1000 * per_cycle, 1)
        # AMX: one 16x32 by 32x16 bf16 tile multiply per cycle per core = 1024 FLOP/cycle
        bf16_per_cycle = 1024 if info.get("amx_bf16") else 2 * per_cycle if info.get("simd") == "avx512" else 0
        info["peak_gflops_bf16"] = round(info["cpus_available"] * info["cpu_mhz"] / 1000 * bf16_per_cycle, 1)
    return info


def machine_tag(info: dict) -> str:
    """'xeon-amx-2cpu', 'epyc-avx2-2cpu': results from different machines never overwrite each other."""
    words = re.sub(
        r"\(r\)|\(tm\)|@.*|\b(intel|amd|processor|cpu|\d+-core)\b",
        " ",
        info.get("cpu_model", platform.machine()).lower(),
    ).split()
    isa = "amx" if info.get("amx_bf16") else info.get("simd", "")
    return "-".join([*(re.sub(r"[^a-z0-9]", "", w) for w in words[:3]), isa, f"{info['cpus_available']}cpu"])


def time_data() -> dict:
    from job import data

    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        ds = data.load("auto", Path(cache))
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        data.load("auto", Path(cache))
        cached = time.perf_counter() - t0
    return {
        "source": ds.source,
        "images": len(ds.y_train),
        "first_load_s": round(first, 2),
        "cached_load_s": round(cached, 2),
    }


def _in_own_process(module: str, *args: str) -> dict:
    """Run `python -m module ARGS --out FILE` (a fresh process: its own peak RSS, threads and precision
    policy) and return the JSON it wrote."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run([sys.executable, "-m", module, *args, "--out", out.name], check=True)
        return json.loads(Path(out.name).read_text())


def train_curve(preset: str, epochs: int | None, limit: int, export: Path | None) -> dict:
    args = ["--preset", preset, "--limit", str(limit)]
    args += ["--epochs", str(epochs)] if epochs else []
    args += ["--export", str(export)] if export else []
    return with_thresholds(_in_own_process("bench.train_curve", *args))


def with_thresholds(record: dict) -> dict:
    for t in THRESHOLDS:
        record[f"seconds_to_{int(t * 100)}"] = first_time_at(record["curve"], t)
    return record


def throughput(preset: str, steps: int) -> dict:
    return _in_own_process("bench.throughput", "--preset", preset, "--steps", str(steps))


def first_time_at(curve: list[dict], accuracy: float) -> float | None:
    return next((pt["seconds"] for pt in curve if pt["test_accuracy"] >= accuracy), None)


def speedup(seed: dict, others: list[dict]) -> dict:
    """How much sooner each other preset first reaches the seed recipe's final accuracy than the seed recipe
    first does, and the best of them."""
    target = seed["final_test_accuracy"]
    seed_t = first_time_at(seed["curve"], target)
    out: dict = {"target_accuracy": target, "seed_seconds": seed_t, "presets": {}}
    for rec in others:
        t = first_time_at(rec["curve"], target)
        out["presets"][rec["preset"]] = {"seconds": t, "ratio": round(seed_t / t, 2) if seed_t and t else None}
    ranked = [(v["ratio"], k) for k, v in out["presets"].items() if v["ratio"]]
    out["best"] = {"preset": max(ranked)[1], "ratio": max(ranked)[0]} if ranked else None
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="10k-image subsample, 2 epochs per preset")
    p.add_argument(
        "--presets",
        default=",".join(ALL_PRESETS),
        help="presets whose full training curves are run (every preset's throughput is measured)",
    )
    p.add_argument(
        "--merge",
        nargs="+",
        metavar=("RESULTS", "CURVE"),
        help="add curves from 'python -m bench.train_curve --out CURVE' to a results file; runs nothing",
    )
    args = p.parse_args(argv)
    if args.merge:
        if len(args.merge) < 2:
            p.error("--merge needs a results file and at least one curve file")
        merge(Path(args.merge[0]), [Path(c) for c in args.merge[1:]])
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    results: dict = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": args.quick,
        "machine": machine(),
    }
    results["data"] = time_data()
    print(f"[bench] data: {results['data']}", flush=True)
    # Every preset's steady-state speed first: what each would take on this machine, curve run or not.
    results["throughput"] = [throughput(name, 4 if args.quick else 8) for name in ALL_PRESETS]
    limit, epochs = (10000, 2) if args.quick else (0, None)
    presets = args.presets.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        export_preset = "fast" if "fast" in presets else presets[-1]
        results["training"] = [
            train_curve(name, epochs, limit, Path(tmp) / "model" if name == export_preset else None) for name in presets
        ]
        results["inference"] = {"model": export_preset, **time_inference(Path(tmp) / "model", args.quick)}
        from bench.serve import run as time_serving  # `job serve` under load vs raw ONNX Runtime (docs/performance.md)

        quick = args.quick
        onnx_file = str(Path(tmp) / "model" / "model.onnx")
        results["serving"] = time_serving(onnx_file, 3 if quick else 6, 1 if quick else 3, "sagemaker", [])
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"{time.strftime('%Y-%m-%d')}-{results['machine']['tag']}" + ("-quick" if args.quick else "")
    write(results, RESULTS / f"{name}.json")


def merge(results_file: Path, curve_files: list[Path]) -> None:
    """Add training curves run separately with bench.train_curve on the same machine (presets too slow for
    one sitting) to a results file, replacing the same presets' curves, and redo its figures."""
    results = json.loads(results_file.read_text())
    for curve in curve_files:
        record = with_thresholds(json.loads(curve.read_text()))
        record["merged_from"] = curve.name
        results["training"] = [r for r in results["training"] if r["preset"] != record["preset"]] + [record]
    order = {name: i for i, name in enumerate(ALL_PRESETS)}
    results["training"].sort(key=lambda r: order.get(r["preset"], len(order)))
    write(results, results_file)


def write(results: dict, path: Path) -> None:
    """Derived figures (FLOP/s, speed-up to the seed's accuracy), the JSON, the plots and a summary."""
    by = {r["preset"]: r for r in results["training"]}
    peak = results["machine"].get("peak_gflops_fp32")
    for rec in results["training"] + results["throughput"]:
        achieved = 3 * rec["forward_flops_per_image"] * rec["images_per_second"] / 1e9  # fwd + 2x bwd
        rec["achieved_gflops"] = round(achieved, 1)
        rec["fraction_of_fp32_peak"] = round(achieved / peak, 3) if peak else None
        bf16_peak = results["machine"].get("peak_gflops_bf16")
        if rec.get("precision") == "mixed_bfloat16" and bf16_peak:
            rec["fraction_of_bf16_peak"] = round(achieved / bf16_peak, 3)
    if "seed" in by and len(by) > 1:
        results["speedup_to_seed_final_accuracy"] = speedup(
            by["seed"], [r for r in results["training"] if r["preset"] != "seed"]
        )
    path.write_text(json.dumps(results, indent=2) + "\n")
    plot(results, path.parent, path.stem)
    print(
        json.dumps(
            {
                "results": str(path),
                "training": {
                    r["preset"]: {
                        k: r[k]
                        for k in (
                            "final_test_accuracy",
                            "train_seconds",
                            "images_per_second",
                            "seconds_to_67",
                            "seconds_to_90",
                            "seconds_to_94",
                        )
                    }
                    for r in results["training"]
                },
                "throughput": {
                    r["preset"]: {
                        k: r[k]
                        for k in ("images_per_second", "precision", "projected_train_seconds", "achieved_gflops")
                    }
                    for r in results["throughput"]
                },
                "speedup_to_seed_final_accuracy": results.get("speedup_to_seed_final_accuracy"),
                "inference_ratio": results["inference"]["ratio_to_keras_predict"],
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()

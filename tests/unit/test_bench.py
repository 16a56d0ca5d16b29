"""The bench's bookkeeping (no training here: benchmarks never run in the tests): machine names, the
speed-up to the seed recipe's accuracy, and merging a separately run curve into a results file."""

import json

from bench import run


def _curve(preset, points, ips=100.0, flops=1_000_000):
    return {
        "preset": preset,
        "precision": "float32",
        "model": "m",
        "batch_size": 8,
        "images_per_second": ips,
        "forward_flops_per_image": flops,
        "final_test_accuracy": points[-1][1],
        "train_seconds": points[-1][0],
        "curve": [{"epoch": i + 1, "seconds": s, "test_accuracy": a} for i, (s, a) in enumerate(points)],
    }


def test_results_of_different_machines_get_different_names():
    amx = {
        "cpu_model": "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz",
        "simd": "avx512",
        "amx_bf16": True,
        "cpus_available": 4,
    }
    avx2 = {"cpu_model": "AMD EPYC 7B13 64-Core Processor", "simd": "avx2", "amx_bf16": False, "cpus_available": 2}
    assert run.machine_tag(amx) == "xeon-platinum-8481c-amx-4cpu"
    assert run.machine_tag(avx2) == "epyc-7b13-avx2-2cpu"


def test_speedup_is_measured_to_the_seed_recipes_final_accuracy():
    seed = _curve("seed", [(10, 0.5), (20, 0.6), (30, 0.68)])
    fast = _curve("fast-short", [(5, 0.69)])
    slow = _curve("fast", [(40, 0.67), (80, 0.9)])
    never = _curve("other", [(5, 0.6)])
    result = run.speedup(seed, [fast, slow, never])
    assert result["target_accuracy"] == 0.68 and result["seed_seconds"] == 30
    assert result["presets"]["fast-short"] == {"seconds": 5, "ratio": 6.0}
    assert result["presets"]["fast"] == {"seconds": 80, "ratio": 0.38}
    assert result["presets"]["other"] == {"seconds": None, "ratio": None}
    assert result["best"] == {"preset": "fast-short", "ratio": 6.0}


def test_a_curve_run_separately_is_merged_and_the_figures_are_redone(tmp_path):
    results = {
        "machine": {"peak_gflops_fp32": 100.0, "cpu_model": "cpu", "tag": "cpu-avx2-2cpu"},
        "training": [
            run.with_thresholds(_curve("seed", [(10, 0.6), (20, 0.7)])),
            run.with_thresholds(_curve("fast", [(99, 0.1)])),
        ],
        "throughput": [{**_curve("fast", [(1, 0.0)]), "projected_train_seconds": 1.0}],
        "inference": {
            "model": "fast",
            "ratio_to_keras_predict": {},
            "images_per_second": {"keras_predict": {"1": 1, "64": 2, "256": 3}},
        },
    }
    path = tmp_path / "2026-01-01-cpu-avx2-2cpu.json"
    path.write_text(json.dumps(results))
    (tmp_path / "fast.json").write_text(json.dumps(_curve("fast", [(3, 0.75), (6, 0.91)], ips=200.0)))
    (tmp_path / "short.json").write_text(json.dumps(_curve("fast-short", [(2, 0.71)])))

    run.merge(path, [tmp_path / "fast.json", tmp_path / "short.json"])

    merged = json.loads(path.read_text())
    assert [r["preset"] for r in merged["training"]] == ["seed", "fast-short", "fast"]  # the bench's order
    fast = merged["training"][2]
    assert fast["merged_from"] == "fast.json" and fast["final_test_accuracy"] == 0.91  # replaced, not added
    assert (fast["seconds_to_67"], fast["seconds_to_90"], fast["seconds_to_94"]) == (3, 6, None)
    assert fast["achieved_gflops"] == 0.6 and fast["fraction_of_fp32_peak"] == 0.006  # 3 x 1 MFLOP x 200/s
    assert merged["speedup_to_seed_final_accuracy"]["best"] == {"preset": "fast-short", "ratio": 10.0}
    assert (tmp_path / "2026-01-01-cpu-avx2-2cpu-time_to_accuracy.png").stat().st_size > 1000
    assert (tmp_path / "2026-01-01-cpu-avx2-2cpu-inference.png").stat().st_size > 1000


# What builds a model, an optimizer or a dataset: a bench that called one would be a second way to configure a run.
BUILDERS = {
    "job.train.model": {"build", "seed_cnn", "fast_net"},
    "job.train.build": {"compile_model", "in_precision"},
    "job.train.input": {"make_dataset", "training_dataset"},
    "job.train.optim": {"build_optimizer"},
    "job.train.loop": {"train"},
    "job.data": {"load_splits"},
}


def _builders_used(source: str) -> list[str]:
    import ast

    used = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module in BUILDERS:
            used += [f"{node.module}.{a.name}" for a in node.names if a.name in BUILDERS[node.module] | {"*"}]
        elif isinstance(node, ast.Import):
            used += [a.name for a in node.names if a.name in BUILDERS]
    return used


def test_bench_builds_nothing_itself_it_goes_through_the_job():
    """bench calls `pipeline.prepare` and `stages.train` with a config (bench/reference is the other framework)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "bench"
    found = {
        str(path.relative_to(root)): used
        for path in root.rglob("*.py")
        if "reference" not in path.parts and (used := _builders_used(path.read_text()))
    }
    assert found == {}


def test_the_builder_check_finds_a_builder():
    assert _builders_used("from job.train.model import fast_net\nimport job.train.optim\n") == [
        "job.train.model.fast_net",
        "job.train.optim",
    ]

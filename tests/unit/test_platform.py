"""Cloud conventions (SageMaker, Vertex AI, TF_CONFIG) and CPU budget detection, without TensorFlow."""

import json

import pytest

from helpers import ROOT, sagemaker_env
from job import config
from job.errors import ConfigError
from job.runtime import platform, resources


def test_sagemaker_conventions(opt_ml):
    p = platform.detect(sagemaker_env(opt_ml))
    assert p.name == "sagemaker" and p.is_chief
    assert p.defaults["out"] == str(opt_ml / "model")
    assert p.defaults["data"] == str(opt_ml / "input" / "data" / "train" / "cifar.tar.gz")  # the single archive
    assert p.defaults["checkpoint_dir"] == str(opt_ml / "checkpoints") and p.defaults["run_id"] == "tj-42"
    assert p.defaults["log_dir"].endswith("tensorboard")
    assert p.hyperparameters == {"epochs": '"3"', "batch-size": "32"}
    cfg = config.resolve({}, env={}, hyperparameters=p.hyperparameters, platform_defaults=p.defaults)
    assert (cfg.epochs, cfg.batch_size, cfg.run_id) == (3, 32, "tj-42")


def test_sagemaker_channel_found_without_env(opt_ml):
    p = platform.detect({"JOB_OPT_ML": str(opt_ml)})  # the hyperparameters file alone marks SageMaker
    assert p.name == "sagemaker" and p.defaults["data"].endswith("cifar.tar.gz")


def test_vertex_conventions_use_the_gcs_mounts():
    p = platform.detect(
        {"AIP_MODEL_DIR": "gs://b/model/", "AIP_CHECKPOINT_DIR": "gs://b/ckpt", "AIP_TENSORBOARD_LOG_DIR": "gs://b/tb"}
    )
    assert p.name == "vertex"
    assert p.defaults == {"out": "/gcs/b/model/", "checkpoint_dir": "/gcs/b/ckpt", "log_dir": "/gcs/b/tb"}


@pytest.mark.parametrize(
    "tf_config,chief,workers",
    [
        ({"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "chief", "index": 0}}, True, 2),
        ({"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "worker", "index": 0}}, False, 2),
        ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}, True, 2),
        ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}, False, 2),
    ],
)
def test_tf_config_roles(tf_config, chief, workers):
    p = platform.detect({"TF_CONFIG": json.dumps(tf_config)})
    assert (p.name, p.is_chief, p.num_workers) == ("kubeflow", chief, workers)


def test_bad_tf_config_is_a_config_error():
    with pytest.raises(ConfigError, match="TF_CONFIG"):
        platform.detect({"TF_CONFIG": "{nope"})


@pytest.mark.parametrize(
    "files,expected",
    [
        ({"cpu.max": "150000 100000\n"}, 1.5),
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3.0),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),
    ],
)
def test_cgroup_cpu_quota(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert resources.cgroup_cpu_limit(tmp_path) == expected


@pytest.mark.parametrize("quota,expected", [(None, 1), ("50000 100000", 1), ("max 100000", 1)])
def test_available_cpus_is_the_affinity_mask_capped_by_the_quota(tmp_path, quota, expected):
    """In a child process pinned to one CPU (what `taskset`/cpusets give a container), whatever the quota."""
    import subprocess
    import sys

    if quota:
        (tmp_path / "cpu.max").write_text(quota + "\n")
    code = (
        "import os, sys; from pathlib import Path; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))});"
        "from job.runtime.resources import available_cpus; print(available_cpus(Path(sys.argv[1])))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert int(proc.stdout) == expected


@pytest.mark.parametrize("quota,expected", [("100000 100000", 1), ("150000 100000", 2), ("max 100000", None)])
def test_available_cpus_rounds_a_fractional_quota_up_within_the_mask(tmp_path, quota, expected):
    import os

    (tmp_path / "cpu.max").write_text(quota + "\n")
    mask = len(os.sched_getaffinity(0))
    assert resources.available_cpus(tmp_path) == min(mask, expected or mask)

"""Cloud conventions (SageMaker, Vertex AI, TF_CONFIG) and CPU budget detection, without TensorFlow."""

import json

import pytest

from helpers import run_job
from job import config, platform, resources
from job.errors import ConfigError


@pytest.fixture
def opt_ml(tmp_path):
    root = tmp_path / "opt_ml"
    (root / "input" / "config").mkdir(parents=True)
    (root / "input" / "data" / "train").mkdir(parents=True)
    (root / "checkpoints").mkdir()
    (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(
        {"epochs": '"3"', "batch-size": "32", "sagemaker_program": "ignored", "sagemaker_region": '"us-east-1"'}))
    (root / "input" / "data" / "train" / "cifar.tar.gz").write_bytes(b"")
    return root


def sagemaker_env(opt_ml):
    return {"JOB_OPT_ML": str(opt_ml), "SM_MODEL_DIR": str(opt_ml / "model"), "TRAINING_JOB_NAME": "tj-42",
            "SM_CHANNEL_TRAIN": str(opt_ml / "input" / "data" / "train"),
            "SM_OUTPUT_DATA_DIR": str(opt_ml / "output" / "data")}


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


def test_sagemaker_entrypoint_resolves_the_same_config(opt_ml):
    proc = run_job("train", "--print-config", env=sagemaker_env(opt_ml))
    cfg = json.loads(proc.stdout)
    assert cfg["epochs"] == 3 and cfg["sources"]["epochs"] == "hyperparameter epochs"
    assert cfg["out"] == str(opt_ml / "model") and cfg["sources"]["out"] == "platform"


def test_sagemaker_failure_reason_is_written(opt_ml):
    (opt_ml / "input" / "data" / "train" / "cifar.tar.gz").write_bytes(b"not a tar")
    proc = run_job("train", env=sagemaker_env(opt_ml))
    assert proc.returncode == 3
    failure = (opt_ml / "output" / "failure").read_text()
    assert failure.startswith("data error:") and "cifar.tar.gz" in failure


def test_vertex_conventions_use_the_gcs_mounts():
    p = platform.detect({"AIP_MODEL_DIR": "gs://b/model/", "AIP_CHECKPOINT_DIR": "gs://b/ckpt",
                         "AIP_TENSORBOARD_LOG_DIR": "gs://b/tb"})
    assert p.name == "vertex"
    assert p.defaults == {"out": "/gcs/b/model/", "checkpoint_dir": "/gcs/b/ckpt", "log_dir": "/gcs/b/tb"}


@pytest.mark.parametrize("tf_config,chief,workers", [
    ({"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "chief", "index": 0}}, True, 2),
    ({"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "worker", "index": 0}}, False, 2),
    ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}, True, 2),
    ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}, False, 2),
])
def test_tf_config_roles(tf_config, chief, workers):
    p = platform.detect({"TF_CONFIG": json.dumps(tf_config)})
    assert (p.name, p.is_chief, p.num_workers) == ("kubeflow", chief, workers)


def test_bad_tf_config_is_a_config_error():
    with pytest.raises(ConfigError, match="TF_CONFIG"):
        platform.detect({"TF_CONFIG": "{nope"})


@pytest.mark.parametrize("files,expected", [
    ({"cpu.max": "150000 100000\n"}, 1.5),
    ({"cpu.max": "max 100000\n"}, None),
    ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3.0),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({}, None),
])
def test_cgroup_cpu_quota(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert resources.cgroup_cpu_limit(tmp_path) == expected


def test_available_cpus_respects_affinity():
    import os
    assert 1 <= resources.available_cpus() <= len(os.sched_getaffinity(0))

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
    assert p.defaults["log_dir"] == str(opt_ml / "output" / "tensorboard")  # TensorBoardOutputConfig default
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
    assert p.defaults == {
        "out": "/gcs/b/model/",
        "checkpoint_dir": "/gcs/b/ckpt",
        "log_dir": "/gcs/b/tb",
        "layout": "vertex",
    }


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


def test_sagemaker_and_vertex_write_the_run_flat_where_they_serve_it(opt_ml):
    sm = platform.detect(sagemaker_env(opt_ml))
    vx = platform.detect({"AIP_MODEL_DIR": "gs://b/m", "CLOUD_ML_JOB_ID": "42"})
    assert (sm.defaults["layout"], vx.defaults["layout"]) == ("sagemaker", "vertex")
    from job.storage.runs import savedmodel_dir

    assert (savedmodel_dir("sagemaker"), savedmodel_dir("vertex"), savedmodel_dir("runs")) == ("1", ".", "saved_model")
    with pytest.raises(ConfigError, match="layout"):
        config.resolve({"out": "s3://b/p", "layout": "sagemaker"}, env={})


@pytest.mark.parametrize(
    "env,run_id",
    [
        ({"AWS_BATCH_JOB_ID": "4d3c2b1a-0f9e", "AWS_BATCH_JOB_ATTEMPT": "2"}, "4d3c2b1a-0f9e"),
        ({"AWS_BATCH_JOB_ID": "4d3c2b1a-0f9e:7"}, "4d3c2b1a-0f9e-7"),  # an array child
        ({"AWS_BATCH_JOB_ID": "4d3c2b1a#2"}, "4d3c2b1a-2"),  # a multi-node parallel node
        ({"CLOUD_ML_JOB_ID": "8123456789", "AIP_MODEL_DIR": "/m"}, "8123456789"),
        ({"TRAINING_JOB_NAME": "tj-1", "SM_MODEL_DIR": "/m"}, "tj-1"),
    ],
)
def test_every_attempt_of_a_platform_job_gets_the_same_valid_run_id(env, run_id):
    for attempt in ("1", "2"):
        p = platform.detect({**env, "AWS_BATCH_JOB_ATTEMPT": attempt} if "AWS_BATCH_JOB_ID" in env else env)
        assert p.defaults["run_id"] == run_id and config.RUN_ID_PATTERN.match(run_id)
    cfg = config.resolve({"run_id": "mine"}, env={}, platform_defaults=platform.detect(env).defaults)
    assert cfg.run_id == "mine"  # --run-id still wins


def test_aws_batch_attempt_is_recorded():
    p = platform.detect({"AWS_BATCH_JOB_ID": "x", "AWS_BATCH_JOB_ATTEMPT": "3"})
    assert (p.name, p.attempt) == ("aws-batch", 3)


def _resourceconfig(opt_ml, hosts, current):
    (opt_ml / "input" / "config" / "resourceconfig.json").write_text(
        json.dumps(
            {
                "current_host": current,
                "hosts": hosts,
                "network_interface_name": "eth0",
                "current_instance_type": "ml.m5.xlarge",
            }
        )
    )


def test_sagemaker_hosts_become_the_same_cluster_spec_tf_config_gives(opt_ml):
    _resourceconfig(opt_ml, ["algo-2", "algo-1", "algo-3"], "algo-2")
    p = platform.detect(sagemaker_env(opt_ml))
    assert p.tf_config == {
        "cluster": {"worker": ["algo-1:2222", "algo-2:2222", "algo-3:2222"]},
        "task": {"type": "worker", "index": 1},
    }
    assert (p.num_workers, p.is_chief) == (3, False)
    _resourceconfig(opt_ml, ["algo-2", "algo-1"], "algo-1")
    assert platform.detect(sagemaker_env(opt_ml)).is_chief  # the first host in the sorted list


def test_sagemaker_toolkit_variables_and_a_single_host(opt_ml):
    env = {**sagemaker_env(opt_ml), "SM_HOSTS": '["algo-1", "algo-2"]', "SM_CURRENT_HOST": "algo-2"}
    assert platform.detect(env).tf_config["task"] == {"type": "worker", "index": 1}
    _resourceconfig(opt_ml, ["algo-1"], "algo-1")
    assert platform.detect(sagemaker_env(opt_ml)).tf_config is None
    _resourceconfig(opt_ml, ["algo-1"], "algo-9")
    with pytest.raises(ConfigError, match="current_host"):
        platform.detect(sagemaker_env(opt_ml))

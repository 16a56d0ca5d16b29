"""Each platform's retry, emulated with exactly the environment and files that platform gives a container:
attempt 1 is sent SIGTERM mid-training (exit 143, a checkpoint saved); attempt 2 starts with the platform's
attempt-2 environment, resumes under the same run id without repeating a step, and publishes where that
platform looks for the model."""

import json
import signal
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import make_image_tree, make_tar, start_job, wait_for_event
from job.storage.runs import local_manifest_problems as verify_manifest

EPOCHS, BATCH = 3, 8


@dataclass
class Attempt:
    args: list[str]
    env: dict


def job_args(tmp: Path, data: Path, *extra: str) -> list[str]:
    """The container's arguments: the data, the length of the run, a cache; the platform's own settings aside."""
    return [
        "train",
        *extra,
        "--data",
        str(data),
        "--epochs",
        str(EPOCHS),
        "--batch-size",
        str(BATCH),
        "--cache-dir",
        str(tmp / "cache"),
    ]


def sagemaker(tmp: Path, data: Path, attempt: int) -> tuple[Attempt, Path]:
    """SageMaker: /opt/ml (moved by JOB_OPT_ML), hyperparameters.json, the train channel, CheckpointConfig's
    /opt/ml/checkpoints (synced to S3 across spot restarts), TRAINING_JOB_NAME, SM_MODEL_DIR."""
    opt_ml = tmp / "opt_ml"
    (opt_ml / "input" / "config").mkdir(parents=True, exist_ok=True)
    (opt_ml / "input" / "data" / "train").mkdir(parents=True, exist_ok=True)
    (opt_ml / "checkpoints").mkdir(exist_ok=True)
    model = opt_ml / "model"
    if model.exists():  # every attempt starts with an empty model directory
        subprocess.run(["rm", "-rf", str(model)], check=True)
    model.mkdir()
    (opt_ml / "input" / "config" / "hyperparameters.json").write_text(
        json.dumps({"epochs": str(EPOCHS), "batch-size": str(BATCH)})
    )
    (opt_ml / "input" / "data" / "train" / data.name).write_bytes(data.read_bytes())
    env = {
        "JOB_OPT_ML": str(opt_ml),
        "TRAINING_JOB_NAME": "cifar-sm-2026-11-26",
        "SM_MODEL_DIR": str(model),
        "SM_CHANNEL_TRAIN": str(opt_ml / "input" / "data" / "train"),
    }
    return Attempt(["train", "--cache-dir", str(tmp / "cache")], env), model


def vertex(tmp: Path, data: Path, attempt: int) -> tuple[Attempt, Path]:
    """Vertex AI: AIP_MODEL_DIR / AIP_CHECKPOINT_DIR / AIP_TENSORBOARD_LOG_DIR (gs:// URIs, read through the
    /gcs/ mount, here a folder), CLOUD_ML_JOB_ID."""
    base = tmp / "gcs" / "bucket" / "job"
    env = {
        "AIP_MODEL_DIR": str(base / "model"),
        "AIP_CHECKPOINT_DIR": str(base / "checkpoints"),
        "AIP_TENSORBOARD_LOG_DIR": str(base / "logs"),
        "CLOUD_ML_JOB_ID": "8123456789012345678",
    }
    return Attempt(job_args(tmp, data), env), base / "model"


def aws_batch(tmp: Path, data: Path, attempt: int) -> tuple[Attempt, Path]:
    """AWS Batch: AWS_BATCH_JOB_ID (here an array child, `<id>:<index>`), AWS_BATCH_JOB_ATTEMPT from 1, and the
    job definition's command and environment (infra/aws/batch-job-definition.json: JOB_OUT, --checkpoint-dir)."""
    env = {
        "AWS_BATCH_JOB_ID": "4d3c2b1a-0f9e-4d8c-b7a6-5f4e3d2c1b0a:7",
        "AWS_BATCH_JOB_ATTEMPT": str(attempt),
        "AWS_BATCH_JQ_NAME": "cifar",
        "AWS_BATCH_CE_NAME": "spot",
        "JOB_OUT": str(tmp / "out"),
    }
    args = job_args(tmp, data, "--preset", "seed", "--checkpoint-dir", str(tmp / "checkpoints"))
    return Attempt(args, env), tmp / "out" / "4d3c2b1a-0f9e-4d8c-b7a6-5f4e3d2c1b0a-7"


def kubernetes(tmp: Path, data: Path, attempt: int) -> tuple[Attempt, Path]:
    """A Kubernetes Job (infra/k8s/job.yaml): JOB_RUN_ID from the `batch.kubernetes.io/job-name` label through the
    downward API, the pod's hostname (the pod name changes on every retry), a /checkpoints volume."""
    env = {
        "JOB_RUN_ID": "cifar10-train",
        "HOSTNAME": f"cifar10-train-{'abcde' if attempt == 1 else 'fghij'}",
        "JOB_OUT": str(tmp / "out"),
        "KUBERNETES_SERVICE_HOST": "10.0.0.1",
    }
    args = job_args(tmp, data, "--preset", "seed", "--checkpoint-dir", str(tmp / "checkpoints"))
    return Attempt(args, env), tmp / "out" / "cifar10-train"


PLATFORMS = {"sagemaker": sagemaker, "vertex": vertex, "aws-batch": aws_batch, "kubernetes": kubernetes}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("retries")
    return make_tar(make_image_tree(base / "tree", per_class=24, seed=9), base / "cifar.tar")


def _load_savedmodel_in_a_fresh_process(path: Path) -> str:
    code = (
        "import sys, numpy as np, tensorflow as tf; m = tf.saved_model.load(sys.argv[1]);"
        "out = m.signatures['serving_default'](image=tf.zeros([2, 32, 32, 3], tf.uint8));"
        "print(out['probabilities'].shape)"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip()


@pytest.mark.parametrize("name", PLATFORMS)
def test_a_retried_attempt_resumes_and_publishes_where_the_platform_looks(name, data, tmp_path):
    emulate = PLATFORMS[name]

    first, model_dir = emulate(tmp_path, data, attempt=1)
    proc = start_job(*first.args, env=first.env)
    started = wait_for_event(proc, "run_started")
    wait_for_event(proc, "epoch")  # epoch 1 done: SIGTERM lands in epoch 2
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-3000:]

    second, model_dir = emulate(tmp_path, data, attempt=2)
    proc = start_job(*second.args, env=second.env)
    out, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    events = [json.loads(line) for line in out.splitlines()]
    restarted, done = events[0], events[-1]
    assert restarted["event"] == "run_started" and done["event"] == "run_complete"
    assert restarted["run_id"] == started["run_id"] == done["run_id"]
    assert "resuming run" in stderr

    metrics = json.loads((model_dir / "metrics.json").read_text())
    per_epoch = -(-metrics["data"]["sizes"]["train"] // BATCH)
    resumed = metrics["training"]["resumed_from"]
    assert resumed and (resumed["epoch"], resumed["step"]) != (0, 0)
    assert metrics["training"]["optimizer_steps"] == EPOCHS * per_epoch  # no step repeated, none skipped
    assert verify_manifest(model_dir) == []
    print(
        f"{name}: run id {done['run_id']}, attempt 1 stopped at epoch {resumed['epoch']} step {resumed['step']}, "
        f"attempt 2 ended at {metrics['training']['optimizer_steps']} steps = {EPOCHS} x {per_epoch}"
    )

    tensorboard = {"sagemaker": tmp_path / "opt_ml" / "output" / "tensorboard", "vertex": model_dir.parent / "logs"}
    if name in tensorboard:  # where TensorBoardOutputConfig's default path / AIP_TENSORBOARD_LOG_DIR are collected
        assert list((tensorboard[name] / "train").glob("events.out.tfevents.*")), sorted(tmp_path.rglob("*tfevents*"))
    if name == "sagemaker":  # SageMaker packs /opt/ml/model into model.tar.gz; TF Serving loads <version>/
        with tarfile.open(tmp_path / "model.tar.gz", "w:gz") as tar:
            tar.add(model_dir, arcname=".")
        with tarfile.open(tmp_path / "model.tar.gz") as tar:
            tar.extractall(tmp_path / "serving", filter="data")
        versions = [p.name for p in (tmp_path / "serving").iterdir() if (p / "saved_model.pb").is_file()]
        assert versions == ["1"] and versions[0].isdigit()
        assert _load_savedmodel_in_a_fresh_process(tmp_path / "serving" / "1") == "(2, 10)"
        assert not (model_dir / "latest.json").exists()
    elif name == "vertex":  # the prebuilt TensorFlow prediction container loads AIP_MODEL_DIR itself
        assert (model_dir / "saved_model.pb").is_file() and (model_dir / "model.onnx").is_file()
        assert _load_savedmodel_in_a_fresh_process(model_dir) == "(2, 10)"
        assert done["run_id"] == "8123456789012345678"
    else:
        assert json.loads((model_dir.parent / "latest.json").read_text())["run_id"] == done["run_id"]
        assert (model_dir / "saved_model" / "saved_model.pb").is_file()

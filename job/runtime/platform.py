"""Where the job runs: SageMaker, Vertex AI, AWS Batch, Kubernetes/Kubeflow (TF_CONFIG), a JobSet / Kubeflow
Trainer v2 TrainJob or an Indexed Job (the cluster derived from the pod's index: job.runtime.cluster), or plain.

Each platform's conventions become defaults for the config (data, out and its layout, checkpoint and log
dirs, a run id that is stable across the platform's retries), so the same image runs everywhere without code
changes. The /opt/ml root can be moved with JOB_OPT_ML (tests use a temporary tree).

Where a platform gives a model directory, the run is written there flat (`layout`), with the SavedModel where
that platform's TensorFlow serving loads it:
- SageMaker packs /opt/ml/model into model.tar.gz; its TensorFlow Serving container loads a numbered version
  folder, `1/saved_model.pb` (https://github.com/aws/sagemaker-tensorflow-serving-container, "Prepare model");
- Vertex AI's prebuilt TensorFlow prediction containers load `saved_model.pb` at the top of the model artifact
  folder, AIP_MODEL_DIR (https://cloud.google.com/vertex-ai/docs/training/exporting-model-artifacts).
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from job.errors import ConfigError
from job.gates.json_doc import read_json_file
from job.runtime.cluster import indexed_cluster, parse_tf_config, sagemaker_cluster
from job.runtime.identity import attempt, platform_run_id

MAX_HYPERPARAMETERS_BYTES = 1024 * 1024  # SageMaker caps a job's hyperparameters far below this


@dataclass
class Platform:
    name: str = "local"
    defaults: dict[str, Any] = field(default_factory=dict)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    tf_config: dict | None = None
    attempt: int | None = None  # the platform's attempt counter, where it has one (AWS Batch)

    @property
    def is_chief(self) -> bool:
        """In a multi-worker cluster only the chief (or worker 0 when there is no chief) publishes."""
        if not self.tf_config:
            return True
        task = self.tf_config.get("task", {})
        cluster = self.tf_config.get("cluster", {})
        if task.get("type") == "chief":
            return True
        if task.get("type") == "worker" and "chief" not in cluster:
            return int(task.get("index", 0)) == 0
        return False

    @property
    def num_workers(self) -> int:
        if not self.tf_config:
            return 1
        cluster = self.tf_config.get("cluster", {})
        return len(cluster.get("chief", [])) + len(cluster.get("worker", []))


def _gcs_to_mount(uri: str) -> str:
    """Vertex AI mounts Cloud Storage at /gcs/<bucket>/...; its AIP_* variables hold gs:// URIs."""
    return "/gcs/" + uri[len("gs://") :] if uri.startswith("gs://") else uri


def _opt_ml(env: Mapping[str, str]) -> Path:
    return Path(env.get("JOB_OPT_ML", "/opt/ml"))


def is_sagemaker(env: Mapping[str, str]) -> bool:
    return (
        "SM_MODEL_DIR" in env
        or "TRAINING_JOB_NAME" in env
        or (_opt_ml(env) / "input" / "config" / "hyperparameters.json").is_file()
    )


def failure_file(env: Mapping[str, str] | None = None) -> Path | None:
    """Where the platform reads a failure reason: SageMaker shows /opt/ml/output/failure. Known even when
    detect() itself fails on a malformed platform file."""
    env = os.environ if env is None else env
    return _opt_ml(env) / "output" / "failure" if is_sagemaker(env) else None


def detect(env: Mapping[str, str] | None = None) -> Platform:
    env = os.environ if env is None else env
    platform = _detect(env)
    identity = platform_run_id(env)
    if identity and "run_id" not in platform.defaults:
        platform.defaults["run_id"] = identity[0]
    platform.attempt = attempt(env)
    return platform


def _detect(env: Mapping[str, str]) -> Platform:
    opt_ml = _opt_ml(env)
    tf_config = parse_tf_config(env["TF_CONFIG"]) if env.get("TF_CONFIG") else None

    hp_file = opt_ml / "input" / "config" / "hyperparameters.json"
    if is_sagemaker(env):
        defaults: dict[str, Any] = {"out": env.get("SM_MODEL_DIR", str(opt_ml / "model")), "layout": "sagemaker"}
        channel = next((env[k] for k in ("SM_CHANNEL_TRAIN", "SM_CHANNEL_TRAINING") if k in env), None)
        if channel is None:
            for name in ("train", "training"):
                if (opt_ml / "input" / "data" / name).is_dir():
                    channel = str(opt_ml / "input" / "data" / name)
                    break
        if channel:
            defaults["data"] = _single_file_or_dir(Path(channel))
        checkpoints = opt_ml / "checkpoints"
        if checkpoints.is_dir():
            defaults["checkpoint_dir"] = str(checkpoints)
        # TensorBoardOutputConfig's default LocalPath: SageMaker uploads what appears here while the job runs.
        defaults["log_dir"] = str(opt_ml / "output" / "tensorboard")
        hyperparameters = {}
        if hp_file.is_file():
            hyperparameters = read_json_file(
                hp_file, f"{hp_file} is not readable JSON", error=ConfigError, max_bytes=MAX_HYPERPARAMETERS_BYTES
            )
            if not isinstance(hyperparameters, dict):
                raise ConfigError(
                    f"{hp_file} must hold a JSON object of name: value, not a {type(hyperparameters).__name__}"
                )
            # SageMaker's own bookkeeping keys are not ours.
            hyperparameters = {k: v for k, v in hyperparameters.items() if not k.startswith("sagemaker_")}
        tf_config = tf_config or sagemaker_cluster(opt_ml, env)
        return Platform("sagemaker", defaults, hyperparameters, tf_config=tf_config)

    if "AIP_MODEL_DIR" in env:
        defaults = {"out": _gcs_to_mount(env["AIP_MODEL_DIR"]), "layout": "vertex"}
        if env.get("AIP_CHECKPOINT_DIR"):
            defaults["checkpoint_dir"] = _gcs_to_mount(env["AIP_CHECKPOINT_DIR"])
        if env.get("AIP_TENSORBOARD_LOG_DIR"):
            defaults["log_dir"] = _gcs_to_mount(env["AIP_TENSORBOARD_LOG_DIR"])
        return Platform("vertex", defaults, tf_config=tf_config)

    if tf_config:
        return Platform("kubeflow", tf_config=tf_config)
    indexed = indexed_cluster(env)
    if indexed:
        return Platform(indexed[0], tf_config=indexed[1])
    if env.get("AWS_BATCH_JOB_ID"):
        return Platform("aws-batch")
    return Platform()


def _single_file_or_dir(channel: Path) -> str:
    """A SageMaker channel is a folder; if it holds exactly one archive, that archive is the source."""
    if channel.is_dir():
        entries = [p for p in channel.iterdir() if not p.name.startswith(".")]
        if len(entries) == 1 and entries[0].is_file():
            return str(entries[0])
    return str(channel)


def write_failure(path: Path | None, message: str) -> None:
    """The one-line failure reason, where the platform shows it (SageMaker); best effort."""
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(message[:1024] + "\n")
    except OSError:
        pass

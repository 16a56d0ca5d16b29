"""Where the job runs: SageMaker, Vertex AI, Kubernetes/Kubeflow (TF_CONFIG) or plain.

Each platform's conventions become defaults for the config (data, out, checkpoint and log dirs),
so the same image runs everywhere without code changes. The /opt/ml root can be moved with
JOB_OPT_ML (tests use a temporary tree).
"""

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from job.errors import ConfigError


@dataclass
class Platform:
    name: str = "local"
    defaults: dict[str, Any] = field(default_factory=dict)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    failure_file: Path | None = None
    tf_config: dict | None = None

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


TF_CONFIG_SHAPE = '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": 0}}'


def parse_tf_config(text: str) -> dict:
    """TF_CONFIG, checked by shape before anything uses it."""
    try:
        tf_config = json.loads(text)
    except ValueError:
        raise ConfigError(f"TF_CONFIG is not valid JSON; it must look like {TF_CONFIG_SHAPE}") from None
    if not isinstance(tf_config, dict):
        raise ConfigError(f"TF_CONFIG must be a JSON object like {TF_CONFIG_SHAPE}, not a {type(tf_config).__name__}")
    cluster, task = tf_config.get("cluster", {}), tf_config.get("task", {})
    if not isinstance(cluster, dict) or not all(
        isinstance(v, list) and all(isinstance(a, str) for a in v) for v in cluster.values()
    ):
        raise ConfigError(f"TF_CONFIG cluster must map each role to a list of 'host:port' strings: {TF_CONFIG_SHAPE}")
    if (
        not isinstance(task, dict)
        or not isinstance(task.get("type", "worker"), str)
        or type(task.get("index", 0)) is not int
        or task.get("index", 0) < 0
    ):
        raise ConfigError(
            f'TF_CONFIG task must be {{"type": role, "index": n}} with an integer n >= 0: {TF_CONFIG_SHAPE}'
        )
    role, index = task.get("type", "worker"), task.get("index", 0)
    if cluster and index >= len(cluster.get(role, [])):
        raise ConfigError(
            f"TF_CONFIG task {role} #{index} is not in the cluster ({len(cluster.get(role, []))} {role} address(es))"
        )
    return tf_config


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
    opt_ml = _opt_ml(env)
    tf_config = parse_tf_config(env["TF_CONFIG"]) if env.get("TF_CONFIG") else None

    hp_file = opt_ml / "input" / "config" / "hyperparameters.json"
    if is_sagemaker(env):
        defaults: dict[str, Any] = {"out": env.get("SM_MODEL_DIR", str(opt_ml / "model"))}
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
        if env.get("SM_OUTPUT_DATA_DIR"):
            defaults["log_dir"] = str(Path(env["SM_OUTPUT_DATA_DIR"]) / "tensorboard")
        if env.get("TRAINING_JOB_NAME"):
            defaults["run_id"] = env["TRAINING_JOB_NAME"]
        hyperparameters = {}
        if hp_file.is_file():
            try:
                hyperparameters = json.loads(hp_file.read_text())
            except (OSError, ValueError) as exc:
                raise ConfigError(f"{hp_file} is not readable JSON ({exc})") from None
            if not isinstance(hyperparameters, dict):
                raise ConfigError(
                    f"{hp_file} must hold a JSON object of name: value, not a {type(hyperparameters).__name__}"
                )
            # SageMaker's own bookkeeping keys are not ours.
            hyperparameters = {k: v for k, v in hyperparameters.items() if not k.startswith("sagemaker_")}
        return Platform("sagemaker", defaults, hyperparameters, opt_ml / "output" / "failure", tf_config)

    if "AIP_MODEL_DIR" in env:
        defaults = {"out": _gcs_to_mount(env["AIP_MODEL_DIR"])}
        if env.get("AIP_CHECKPOINT_DIR"):
            defaults["checkpoint_dir"] = _gcs_to_mount(env["AIP_CHECKPOINT_DIR"])
        if env.get("AIP_TENSORBOARD_LOG_DIR"):
            defaults["log_dir"] = _gcs_to_mount(env["AIP_TENSORBOARD_LOG_DIR"])
        return Platform("vertex", defaults, tf_config=tf_config)

    if tf_config:
        return Platform("kubeflow", tf_config=tf_config)
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

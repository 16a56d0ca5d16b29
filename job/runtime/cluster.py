"""The training cluster, as TF_CONFIG describes it: read from TF_CONFIG (Kubeflow's TFJob and Vertex AI set it),
or derived from what SageMaker writes into a bring-your-own container, so one image trains multi-worker on
all three.

SageMaker: /opt/ml/input/config/resourceconfig.json holds `current_host`, `hosts` and
`network_interface_name` ("Distributed Training Configuration" in "How Amazon SageMaker AI Provides Training
Information", https://docs.aws.amazon.com/sagemaker/latest/dg/your-algorithms-training-algo-running-container.html);
SM_HOSTS / SM_CURRENT_HOST carry the same where the SageMaker training toolkit runs. The hosts, sorted, become
the workers; the first is worker 0, the chief; every worker listens on SAGEMAKER_WORKER_PORT.
"""

import json
import os
from collections.abc import Mapping
from pathlib import Path

from job.errors import ConfigError

SAGEMAKER_WORKER_PORT = 2222  # TensorFlow's conventional gRPC port for tf.distribute clusters


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


def sagemaker_cluster(opt_ml: Path, env: Mapping[str, str] | None = None) -> dict | None:
    """TF_CONFIG for a SageMaker job of several instances, or None for one instance."""
    env = os.environ if env is None else env
    config_file = opt_ml / "input" / "config" / "resourceconfig.json"
    if config_file.is_file():
        try:
            config = json.loads(config_file.read_text())
            hosts, current = config["hosts"], config["current_host"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{config_file} is not a SageMaker resource config ({exc})") from None
    elif env.get("SM_HOSTS") and env.get("SM_CURRENT_HOST"):
        try:
            hosts, current = json.loads(env["SM_HOSTS"]), env["SM_CURRENT_HOST"]
        except ValueError:
            raise ConfigError("SM_HOSTS is not a JSON list of host names") from None
    else:
        return None
    if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts) or current not in hosts:
        raise ConfigError(f"SageMaker hosts {hosts!r} must be a list of names that includes current_host {current!r}")
    if len(hosts) < 2:
        return None
    hosts = sorted(hosts)
    return {
        "cluster": {"worker": [f"{h}:{SAGEMAKER_WORKER_PORT}" for h in hosts]},
        "task": {"type": "worker", "index": hosts.index(current)},
    }

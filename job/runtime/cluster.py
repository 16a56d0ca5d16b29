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


# ------------------------------------------------------------------------------ Kubernetes indexed pods
#
# Kubeflow Trainer v2 ships no TensorFlow runtime: a TrainJob on a plainML runtime, a JobSet and an Indexed Job
# start N identical pods and set no TF_CONFIG (kubeflow/trainer#2699). Each pod knows its own index and the
# names that make up its peers' DNS names, which the manifests in infra/k8s and infra/kubeflow pass as
# environment variables (the downward API for labels, literal values for what no field exposes):
#
#   JOB_COMPLETION_INDEX      this pod's index in its Job (Kubernetes sets it in Indexed Jobs)
#   Indexed Job:  CLUSTER_JOB_NAME (label batch.kubernetes.io/job-name), CLUSTER_WORKERS (= completions),
#                 CLUSTER_SUBDOMAIN (the headless Service = pod subdomain);  host <job>-<index>.<subdomain>
#   JobSet:       JOBSET_NAME, JOBSET_REPLICATED_JOB, JOBSET_JOB_INDEX, JOBSET_REPLICAS (labels
#                 jobset.sigs.k8s.io/{jobset-name, replicatedjob-name, job-index, replicatedjob-replicas}),
#                 CLUSTER_PODS_PER_JOB (= each Job's completions, default 1), CLUSTER_SUBDOMAIN (default: the
#                 JobSet's name, JobSet's own default); host <jobset>-<rjob>-<job index>-<pod index>.<subdomain>
#   CLUSTER_PORT              the port every worker listens on (default 2222)
#   CLUSTER_ADDRESS_OVERRIDE  host:port,... replacing the derived addresses, same count (emulation on one host)
#
# Worker 0 is the chief. TF_CONFIG, when set, wins over all of this.

INDEXED_KEYS = ("JOB_COMPLETION_INDEX",)


def _int(env: Mapping[str, str], name: str, default: int | None = None, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        if default is None:
            raise ConfigError(f"{name} is not set; the pod manifest must pass it (docs/platforms.md)")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} must be at least {minimum}")
    return value


def _name(env: Mapping[str, str], name: str, default: str | None = None) -> str:
    value = env.get(name) or default
    if not value or not all(c.isalnum() or c in "-." for c in value):
        raise ConfigError(f"{name}={value!r} must be a DNS name (letters, digits, '-', '.')")
    return value


def indexed_cluster(env: Mapping[str, str] | None = None) -> tuple[str, dict | None] | None:
    """(kind, TF_CONFIG or None for a single worker) for a pod of a JobSet / TrainJob or an Indexed Job;
    None when this is neither."""
    env = os.environ if env is None else env
    port = _int(env, "CLUSTER_PORT", SAGEMAKER_WORKER_PORT, 1)
    if env.get("JOBSET_NAME"):
        jobset, rjob = _name(env, "JOBSET_NAME"), _name(env, "JOBSET_REPLICATED_JOB")
        replicas, per_job = _int(env, "JOBSET_REPLICAS", 1, 1), _int(env, "CLUSTER_PODS_PER_JOB", 1, 1)
        job_index, pod_index = _int(env, "JOBSET_JOB_INDEX", 0), _int(env, "JOB_COMPLETION_INDEX", 0)
        subdomain = _name(env, "CLUSTER_SUBDOMAIN", jobset)
        hosts = [f"{jobset}-{rjob}-{j}-{p}.{subdomain}" for j in range(replicas) for p in range(per_job)]
        index, kind = job_index * per_job + pod_index, "jobset"
    elif env.get("JOB_COMPLETION_INDEX") and env.get("CLUSTER_WORKERS"):
        job, workers = _name(env, "CLUSTER_JOB_NAME"), _int(env, "CLUSTER_WORKERS", minimum=1)
        subdomain = _name(env, "CLUSTER_SUBDOMAIN")
        hosts = [f"{job}-{i}.{subdomain}" for i in range(workers)]
        index, kind = _int(env, "JOB_COMPLETION_INDEX"), "kubernetes-indexed"
    else:
        return None
    addresses = [f"{h}:{port}" for h in hosts]
    if env.get("CLUSTER_ADDRESS_OVERRIDE"):
        addresses = env["CLUSTER_ADDRESS_OVERRIDE"].split(",")
        if len(addresses) != len(hosts):
            raise ConfigError(f"CLUSTER_ADDRESS_OVERRIDE lists {len(addresses)} addresses for {len(hosts)} workers")
    if index >= len(addresses):
        raise ConfigError(f"this pod's index {index} is outside the cluster of {len(addresses)} workers")
    if len(addresses) < 2:
        return kind, None
    return kind, {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}

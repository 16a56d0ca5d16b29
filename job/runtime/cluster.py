"""The training cluster, as TF_CONFIG describes it: read from TF_CONFIG (Kubeflow's TFJob and Vertex AI set it),
or derived from what SageMaker writes into a bring-your-own container, so one image trains multi-worker on
all three.

SageMaker: /opt/ml/input/config/resourceconfig.json holds `current_host`, `hosts` and
`network_interface_name` ("Distributed Training Configuration" in "How Amazon SageMaker AI Provides Training
Information", https://docs.aws.amazon.com/sagemaker/latest/dg/your-algorithms-training-algo-running-container.html);
SM_HOSTS / SM_CURRENT_HOST carry the same where the SageMaker training toolkit runs. The hosts, sorted, become
the workers; the first is worker 0, the chief; every worker listens on SAGEMAKER_WORKER_PORT.
"""

import os
import re
from collections.abc import Mapping
from pathlib import Path

from job.errors import ConfigError
from job.gates.json_doc import load_json, read_json_file
from job.gates.text import shown

SAGEMAKER_WORKER_PORT = 2222  # TensorFlow's conventional gRPC port for tf.distribute clusters

# Bounds on everything the pod environment and the platform files say about the cluster (every failure: exit 2,
# one line naming the variable or file).
# MAX_WORKERS: the host list is built in memory and every worker opens a gRPC channel to every other; 1024 is
# far beyond what this job can use (--batch-size is the global batch, split across the workers: at 1024 workers
# the largest preset batch leaves under one image per worker per step, and CIFAR-10's 50,000 images give each
# worker 48 per epoch), and well above SageMaker's and Vertex AI's instance-count quotas for one job.
MAX_WORKERS = 1024
MAX_ENV_BYTES = 64 * 1024  # TF_CONFIG, SM_HOSTS, CLUSTER_ADDRESS_OVERRIDE: 1024 addresses fit easily
MAX_CONFIG_BYTES = 1024 * 1024  # resourceconfig.json
MAX_ADDRESS_CHARS = 261  # a 253-character DNS name, ':' and a 5-digit port (+ brackets for IPv6)
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")  # DNS-1123 label (RFC 1123, as Kubernetes checks it)
_HOST_LABEL = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?")  # host names are case-insensitive
_IPV4 = re.compile(r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}")
_DIGITS = re.compile(r"[0-9]{1,9}")


def _dns_name(value: str, labels=_HOST_LABEL) -> bool:
    """A DNS-1123 subdomain: dot-separated labels of 1-63 characters, 253 in all, ASCII only."""
    return 0 < len(value) <= 253 and value.isascii() and all(labels.fullmatch(part) for part in value.split("."))


def check_address(address, what: str) -> str:
    """`host:port` with a DNS name, an IPv4 address or a bracketed IPv6 address, and a port 1..65535."""
    if not isinstance(address, str) or not 0 < len(address) <= MAX_ADDRESS_CHARS or not address.isascii():
        raise ConfigError(f"{what}: {shown(address, 80)} is not a 'host:port' address")
    host, sep, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        import ipaddress

        try:
            ok_host = ipaddress.ip_address(host[1:-1]).version == 6
        except ValueError:
            ok_host = False
    else:
        ok_host = bool(_IPV4.fullmatch(host)) or _dns_name(host)
    if not sep or not ok_host or not _DIGITS.fullmatch(port) or not 1 <= int(port) <= 65535:
        raise ConfigError(
            f"{what}: {shown(address, 80)} is not a 'host:port' address (a DNS name or IP address, a port 1..65535)"
        )
    return address


def _env_json(env: Mapping[str, str], name: str, hint: str):
    raw = env[name]
    if len(raw.encode("utf-8", "surrogatepass")) > MAX_ENV_BYTES:
        raise ConfigError(f"{name} is {len(raw):,} characters, over the {MAX_ENV_BYTES:,}-byte limit; {hint}")
    return load_json(raw, name, error=ConfigError, max_bytes=MAX_ENV_BYTES)


TF_CONFIG_SHAPE = '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": 0}}'


def parse_tf_config(text: str) -> dict:
    """TF_CONFIG, checked by shape and bounds before anything uses it: JSON (job.gates.json_doc), the cluster's
    roles lists of at most MAX_WORKERS 'host:port' addresses in all, the task inside the cluster."""
    tf_config = _env_json({"TF_CONFIG": text}, "TF_CONFIG", f"it must look like {TF_CONFIG_SHAPE}")
    if not isinstance(tf_config, dict):
        raise ConfigError(f"TF_CONFIG must be a JSON object like {TF_CONFIG_SHAPE}, not a {type(tf_config).__name__}")
    cluster, task = tf_config.get("cluster", {}), tf_config.get("task", {})
    if not isinstance(cluster, dict) or not all(
        isinstance(k, str) and isinstance(v, list) and all(isinstance(a, str) for a in v) for k, v in cluster.items()
    ):
        raise ConfigError(f"TF_CONFIG cluster must map each role to a list of 'host:port' strings: {TF_CONFIG_SHAPE}")
    if sum(len(v) for v in cluster.values()) > MAX_WORKERS:
        raise ConfigError(f"TF_CONFIG lists more than {MAX_WORKERS} tasks; this job trains on at most {MAX_WORKERS}")
    for role, addresses in cluster.items():
        if not _LABEL.fullmatch(role.replace("_", "-")):
            raise ConfigError(f"TF_CONFIG cluster role {shown(role, 80)} is not a task type (chief, worker, ps...)")
        for address in addresses:
            check_address(address, f"TF_CONFIG cluster {role}")
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
            f"TF_CONFIG task {shown(role, 40)} #{index} is not in the cluster "
            f"({len(cluster.get(role, []))} {shown(role, 40)} address(es))"
        )
    return tf_config


def sagemaker_cluster(opt_ml: Path, env: Mapping[str, str] | None = None) -> dict | None:
    """TF_CONFIG for a SageMaker job of several instances, or None for one instance."""
    env = os.environ if env is None else env
    config_file = opt_ml / "input" / "config" / "resourceconfig.json"
    if config_file.is_file():
        config = read_json_file(config_file, str(config_file), error=ConfigError, max_bytes=MAX_CONFIG_BYTES)
        if not isinstance(config, dict) or "hosts" not in config or "current_host" not in config:
            raise ConfigError(f"{config_file} is not a SageMaker resource config (no hosts / current_host)")
        hosts, current, what = config["hosts"], config["current_host"], str(config_file)
    elif env.get("SM_HOSTS") and env.get("SM_CURRENT_HOST"):
        hosts, current, what = (
            _env_json(env, "SM_HOSTS", "a JSON list of host names"),
            env["SM_CURRENT_HOST"],
            "SM_HOSTS",
        )
    else:
        return None
    if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts) or current not in hosts:
        raise ConfigError(
            f"SageMaker hosts ({what}) must be a list of names that includes current_host {shown(current, 80)}"
        )
    if len(hosts) > MAX_WORKERS or len(set(hosts)) != len(hosts):
        raise ConfigError(f"SageMaker hosts ({what}): {len(hosts)} names; at most {MAX_WORKERS}, each once")
    for host in hosts:
        if not _dns_name(host):
            raise ConfigError(f"SageMaker hosts ({what}): {shown(host, 80)} is not a DNS name")
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


def _int(
    env: Mapping[str, str], name: str, default: int | None = None, minimum: int = 0, maximum: int = MAX_WORKERS - 1
) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        if default is None:
            raise ConfigError(f"{name} is not set; the pod manifest must pass it (docs/platforms.md)")
        return default
    if not _DIGITS.fullmatch(raw.strip()):  # ASCII digits only: int() also takes '1_000', '+5' and other scripts
        raise ConfigError(f"{name}={shown(raw, 40)} is not a non-negative integer")
    value = int(raw)
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name}={value} must be between {minimum} and {maximum}")
    return value


def _name(env: Mapping[str, str], name: str, default: str | None = None, subdomain: bool = False) -> str:
    """A Kubernetes object name as it appears in a pod's DNS name: a DNS-1123 label (lower-case ASCII letters,
    digits, '-', at most 63), or with `subdomain` dot-separated labels of at most 253 characters in all."""
    value = env.get(name) or default
    ok = bool(value) and (_dns_name(value, _LABEL) if subdomain else bool(_LABEL.fullmatch(value)))
    if not ok:
        kind = (
            "DNS-1123 subdomain (labels of a-z, 0-9, '-', dot-separated, 253 in all)"
            if subdomain
            else ("DNS-1123 label (a-z, 0-9, '-', at most 63 characters)")
        )
        raise ConfigError(f"{name}={shown(value, 80)} must be a {kind}")
    return value


def indexed_cluster(env: Mapping[str, str] | None = None) -> tuple[str, dict | None] | None:
    """(kind, TF_CONFIG or None for a single worker) for a pod of a JobSet / TrainJob or an Indexed Job;
    None when this is neither."""
    env = os.environ if env is None else env
    port = _int(env, "CLUSTER_PORT", SAGEMAKER_WORKER_PORT, 1, 65535)
    if env.get("JOBSET_NAME"):
        jobset, rjob = _name(env, "JOBSET_NAME"), _name(env, "JOBSET_REPLICATED_JOB")
        replicas, per_job = (
            _int(env, "JOBSET_REPLICAS", 1, 1, MAX_WORKERS),
            _int(env, "CLUSTER_PODS_PER_JOB", 1, 1, MAX_WORKERS),
        )
        if replicas * per_job > MAX_WORKERS:
            raise ConfigError(
                f"JOBSET_REPLICAS x CLUSTER_PODS_PER_JOB = {replicas * per_job} workers; at most {MAX_WORKERS}"
            )
        job_index = _int(env, "JOBSET_JOB_INDEX", 0, 0, replicas - 1)  # another Job's index would take its place
        pod_index = _int(env, "JOB_COMPLETION_INDEX", 0, 0, per_job - 1)
        subdomain = _name(env, "CLUSTER_SUBDOMAIN", jobset, subdomain=True)
        hosts = [f"{jobset}-{rjob}-{j}-{p}" for j in range(replicas) for p in range(per_job)]
        index, kind = job_index * per_job + pod_index, "jobset"
    elif env.get("JOB_COMPLETION_INDEX") and env.get("CLUSTER_WORKERS"):
        job, workers = _name(env, "CLUSTER_JOB_NAME"), _int(env, "CLUSTER_WORKERS", minimum=1, maximum=MAX_WORKERS)
        subdomain = _name(env, "CLUSTER_SUBDOMAIN", subdomain=True)
        hosts = [f"{job}-{i}" for i in range(workers)]
        index, kind = _int(env, "JOB_COMPLETION_INDEX", maximum=workers - 1), "kubernetes-indexed"
    elif env.get("JOB_COMPLETION_INDEX"):
        # An Indexed Job without the cluster variables: index 0 alone is a single worker; any other index would
        # make every pod a chief that publishes its own run.
        if _int(env, "JOB_COMPLETION_INDEX") != 0:
            raise ConfigError(
                f"JOB_COMPLETION_INDEX={shown(env['JOB_COMPLETION_INDEX'], 20)} without CLUSTER_WORKERS: every pod "
                "would train "
                "and publish alone; set CLUSTER_WORKERS (= completions), CLUSTER_JOB_NAME and CLUSTER_SUBDOMAIN "
                "(infra/k8s/indexed-job.yaml)"
            )
        return None
    else:
        return None
    for host in hosts:
        if not _LABEL.fullmatch(host):  # the pod's hostname is one DNS label
            raise ConfigError(f"the pod host name {shown(host, 80)} is longer than a DNS label's 63 characters")
    addresses = [f"{h}.{subdomain}:{port}" for h in hosts]
    if len(f"{hosts[-1]}.{subdomain}") > 253:
        raise ConfigError(f"CLUSTER_SUBDOMAIN={shown(subdomain, 80)} makes host names over 253 characters")
    if env.get("CLUSTER_ADDRESS_OVERRIDE"):
        raw = env["CLUSTER_ADDRESS_OVERRIDE"]
        if len(raw) > MAX_ENV_BYTES:
            raise ConfigError(f"CLUSTER_ADDRESS_OVERRIDE is over the {MAX_ENV_BYTES:,}-character limit")
        addresses = [check_address(a, "CLUSTER_ADDRESS_OVERRIDE") for a in raw.split(",")]
        if len(addresses) != len(hosts):
            raise ConfigError(f"CLUSTER_ADDRESS_OVERRIDE lists {len(addresses)} addresses for {len(hosts)} workers")
    if len(addresses) < 2:
        return kind, None
    return kind, {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}

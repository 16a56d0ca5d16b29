"""Property tests of the cluster environment (job/runtime/cluster.py): whatever a pod's environment, TF_CONFIG,
SM_HOSTS or resourceconfig.json holds, the cluster is derived or ConfigError (exit 2) is raised, never another
exception, in bounded time and memory (no host list longer than MAX_WORKERS is ever built). No TensorFlow."""

import json
import os
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from unit.conftest import _no_tensorflow  # noqa: F401 (the unit tier's TensorFlow blocker, autouse)

from job.errors import ConfigError
from job.runtime.cluster import MAX_WORKERS, indexed_cluster, parse_tf_config, sagemaker_cluster

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=2000, database=None, suppress_health_check=[HealthCheck.too_slow])

NUMBERS = st.sampled_from(
    ["0", "1", "2", "-1", "1000000000", "99999999999999999999", "1_000", "+3", " 2", "٣", "0x10", "", "1e3", "2.0"]
) | st.integers(min_value=-5, max_value=3000).map(str)
NAMES = st.sampled_from(
    ["job", "a", "My-Job", "job-", "-job", "jöb", "a" * 63, "a" * 64, "a" * 300, "x.y", "x..y", "", "job\n", "a b"]
) | st.text(max_size=70)
PORTS = st.sampled_from(["2222", "0", "1", "65535", "65536", "70000", "-1", "", "22a"])
ADDRESS = st.sampled_from(
    ["127.0.0.1:1", "h:2222", "[::1]:5", "h:0", "h:", ":1", "h:70000", "", "999.1.1.1:2", "a b:1", "h:1:2", "[zz]:1"]
) | st.text(max_size=30)
OVERRIDES = st.lists(ADDRESS, max_size=6).map(",".join)

ENV = st.fixed_dictionaries(
    {},
    optional={
        "JOB_COMPLETION_INDEX": NUMBERS,
        "CLUSTER_WORKERS": NUMBERS,
        "CLUSTER_JOB_NAME": NAMES,
        "CLUSTER_SUBDOMAIN": NAMES,
        "CLUSTER_PORT": PORTS,
        "CLUSTER_ADDRESS_OVERRIDE": OVERRIDES,
        "JOBSET_NAME": NAMES,
        "JOBSET_REPLICATED_JOB": NAMES,
        "JOBSET_JOB_INDEX": NUMBERS,
        "JOBSET_REPLICAS": NUMBERS,
        "CLUSTER_PODS_PER_JOB": NUMBERS,
    },
)


def _bounded(call):
    t0 = time.monotonic()
    try:
        result = call()
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc)
        result = None
    assert time.monotonic() - t0 < 1.0
    return result


@FUZZ
@given(ENV)
def test_any_pod_environment_gives_a_cluster_or_one_config_error(env):
    result = _bounded(lambda: indexed_cluster(env))
    if result is None:
        return
    kind, tf_config = result
    assert kind in ("jobset", "kubernetes-indexed")
    if tf_config is not None:
        workers = tf_config["cluster"]["worker"]
        assert 2 <= len(workers) <= MAX_WORKERS
        assert 0 <= tf_config["task"]["index"] < len(workers)
        assert all(a.isascii() and 0 < int(a.rpartition(":")[2]) < 65536 for a in workers)


def test_the_defects_that_were_found_are_refused():
    huge = {
        "JOB_COMPLETION_INDEX": "0",
        "CLUSTER_WORKERS": "1000000000",
        "CLUSTER_JOB_NAME": "j",
        "CLUSTER_SUBDOMAIN": "s",
    }
    for env, says in [
        (huge, "CLUSTER_WORKERS"),
        ({"JOB_COMPLETION_INDEX": "1"}, "CLUSTER_WORKERS"),
        ({**huge, "CLUSTER_WORKERS": "2", "JOB_COMPLETION_INDEX": "2"}, "JOB_COMPLETION_INDEX"),
        ({"JOBSET_NAME": "js", "JOBSET_REPLICATED_JOB": "w", "JOB_COMPLETION_INDEX": "1"}, "JOB_COMPLETION_INDEX"),
        ({"JOBSET_NAME": "js", "JOBSET_REPLICATED_JOB": "w", "JOBSET_JOB_INDEX": "3"}, "JOBSET_JOB_INDEX"),
        ({**huge, "CLUSTER_WORKERS": "2", "CLUSTER_JOB_NAME": "jöb"}, "CLUSTER_JOB_NAME"),
        ({**huge, "CLUSTER_WORKERS": "2", "CLUSTER_JOB_NAME": "a" * 300}, "CLUSTER_JOB_NAME"),
        ({**huge, "CLUSTER_WORKERS": "2", "CLUSTER_PORT": "70000"}, "CLUSTER_PORT"),
        ({**huge, "CLUSTER_WORKERS": "2", "CLUSTER_ADDRESS_OVERRIDE": "127.0.0.1:1,"}, "CLUSTER_ADDRESS_OVERRIDE"),
    ]:
        t0 = time.monotonic()
        try:
            indexed_cluster(env)
        except ConfigError as exc:
            assert says in str(exc), (env, str(exc))
        else:
            raise AssertionError(f"accepted {env}")
        assert time.monotonic() - t0 < 0.5


SCALARS = st.none() | st.booleans() | st.integers() | st.text(max_size=12)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
TF_CONFIGS = (
    st.fixed_dictionaries(
        {},
        optional={
            "cluster": st.dictionaries(st.sampled_from(["worker", "chief", "ps", "évaluateur", ""]), st.lists(ADDRESS)),
            "task": st.fixed_dictionaries(
                {}, optional={"type": st.sampled_from(["worker", "chief", "x"]), "index": st.integers(-2, 5) | SCALARS}
            ),
        },
    ).map(json.dumps)
    | JSON_VALUES.map(json.dumps)
    | st.text(max_size=40)
)
NASTY = st.sampled_from(["[" * 100_000, '{"cluster": {"worker": ["h:1"]}, "task": {"index": NaN}}', "\ud800"])


@FUZZ
@given(TF_CONFIGS | NASTY)
def test_any_tf_config_is_parsed_or_refused_with_one_config_error(text):
    tf_config = _bounded(lambda: parse_tf_config(text))
    if tf_config is not None:
        assert isinstance(tf_config, dict)
        assert sum(len(v) for v in tf_config.get("cluster", {}).values()) <= MAX_WORKERS


def test_a_tf_config_of_a_million_workers_is_refused_from_its_size():
    text = json.dumps({"cluster": {"worker": [f"h{i}:1" for i in range(1_000_000)]}, "task": {"index": 0}})
    _bounded(lambda: parse_tf_config(text))  # refused (over 64 KiB), in well under a second


@FUZZ
@given(JSON_VALUES.map(json.dumps) | st.text(max_size=40) | NASTY, st.text(max_size=12))
def test_any_sagemaker_hosts_are_a_cluster_or_one_config_error(hosts, current):
    _bounded(lambda: sagemaker_cluster(Path("/nonexistent"), {"SM_HOSTS": hosts, "SM_CURRENT_HOST": current}))
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "input" / "config" / "resourceconfig.json"
        config.parent.mkdir(parents=True)
        text = json.dumps({"hosts": json.loads(hosts), "current_host": current}) if _json(hosts) else hosts
        config.write_bytes(text.encode("utf-8", "surrogatepass"))
        result = _bounded(lambda: sagemaker_cluster(Path(tmp), {}))
        if result is not None:
            assert 2 <= len(result["cluster"]["worker"]) <= MAX_WORKERS


def _json(text: str) -> bool:
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True

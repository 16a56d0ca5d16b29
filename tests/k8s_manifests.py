"""The Kubernetes manifests of infra/, read as the cluster would: CRD schemas from ../shared/schemas/k8s-crds,
and the environment a pod of each manifest gets (downward API fields resolved from the labels Kubernetes,
JobSet and Kubeflow Trainer put on their pods)."""

import functools
from pathlib import Path

import yaml

from helpers import ROOT

CRDS = ROOT.parent / "shared" / "schemas" / "k8s-crds"
INFRA = ROOT / "infra"


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@functools.cache
def _crds() -> list[dict]:
    """The vendored CRDs, parsed once per test process (5 MB of YAML: seconds each time with the pure-Python
    loader)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return [yaml.load(path.read_text(), Loader=loader) for path in sorted(CRDS.glob("*.yaml"))]


def crd_schema(api_version: str, kind: str) -> dict:
    """The openAPIV3Schema of `kind` at `api_version` from the vendored CRDs."""
    group, _, version = api_version.partition("/")
    for crd in _crds():
        if crd["spec"]["group"] == group and crd["spec"]["names"]["kind"] == kind:
            for v in crd["spec"]["versions"]:
                if v["name"] == version:
                    return v["schema"]["openAPIV3Schema"]
    raise LookupError(f"no CRD for {api_version} {kind} in {CRDS}")


def validate_cr(doc: dict) -> None:
    import jsonschema

    jsonschema.validate(doc, crd_schema(doc["apiVersion"], doc["kind"]), cls=jsonschema.Draft7Validator)


def pod_env(container: dict, labels: dict[str, str], extra: list[dict] = ()) -> dict[str, str]:
    """The container's environment as the kubelet builds it: values, and fieldRefs on metadata.labels."""
    env = {}
    for item in [*container.get("env", []), *extra]:
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        path = item["valueFrom"]["fieldRef"]["fieldPath"]
        key = path[len("metadata.labels['") : -2]
        env[item["name"]] = labels[key]
    return env


def pods(kind: str) -> list[dict[str, str]]:
    """The environment of each pod the manifest starts, as Kubernetes / JobSet / Trainer v2 label them."""
    if kind == "indexed":
        service, job = docs(INFRA / "k8s" / "indexed-job.yaml")
        pod = job["spec"]["template"]["spec"]
        assert pod["subdomain"] == service["metadata"]["name"] and service["spec"]["clusterIP"] == "None"
        n, (container,) = job["spec"]["completions"], pod["containers"]
        labels = {"batch.kubernetes.io/job-name": job["metadata"]["name"]}
        return [{**pod_env(container, labels), "JOB_COMPLETION_INDEX": str(i)} for i in range(n)]
    if kind == "jobset":
        (jobset,) = docs(INFRA / "jobset" / "jobset.yaml")
        rjob = jobset["spec"]["replicatedJobs"][0]
        name, replicas, n = jobset["metadata"]["name"], rjob["replicas"], rjob["template"]["spec"]["completions"]
        (container,) = rjob["template"]["spec"]["template"]["spec"]["containers"]
        extra = []
    else:  # Trainer v2 makes a JobSet named after the TrainJob, its node Job with numNodes completions
        runtime, trainjob = docs(INFRA / "kubeflow" / "trainjob.yaml")
        rjob = runtime["spec"]["template"]["spec"]["replicatedJobs"][0]
        name, replicas, n = trainjob["metadata"]["name"], 1, trainjob["spec"]["trainer"]["numNodes"]
        (container,) = rjob["template"]["spec"]["template"]["spec"]["containers"]
        extra = trainjob["spec"]["trainer"]["env"]
    pods = []
    for j in range(replicas):
        labels = {
            "jobset.sigs.k8s.io/jobset-name": name,
            "jobset.sigs.k8s.io/replicatedjob-name": rjob["name"],
            "jobset.sigs.k8s.io/job-index": str(j),
            "jobset.sigs.k8s.io/replicatedjob-replicas": str(replicas),
        }
        pods += [{**pod_env(container, labels, extra), "JOB_COMPLETION_INDEX": str(p)} for p in range(n)]
    return pods

"""Cloud and cluster manifests, validated offline, and the Dockerfile lint."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import ROOT
from job import errors

INFRA = ROOT / "infra"
PERMANENT = sorted(errors.PERMANENT_EXIT_CODES)
RETRYABLE = list(errors.RETRYABLE_EXIT_CODES)


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def test_dockerfile_contract():
    text = dockerfile()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim-bookworm$", text, re.M)
    assert 'ENTRYPOINT ["python", "-m", "job"]' in text and 'CMD ["train"]' in text
    assert re.search(r"^USER 10001:10001$", text, re.M) and "PYTHONUNBUFFERED=1" in text
    assert "-r requirements.lock" in text  # the exact lock, nothing resolved at build time
    dockerignore = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    assert dockerignore[0] == "*"  # deny by default: no data, venvs, artifacts or secrets in the context
    assert {"!job/", "!requirements.lock"} <= set(dockerignore)


def test_hadolint_is_clean():
    exe = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    proc = subprocess.run([exe, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_kubernetes_job():
    job = yaml.safe_load((INFRA / "k8s" / "job.yaml").read_text())
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    spec = job["spec"]
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and spec["backoffLimit"] >= 1  # podFailurePolicy requires Never
    (container,) = pod["containers"]
    assert "command" not in container and container["args"][0] == "train"  # the image's ENTRYPOINT runs
    assert container["image"].startswith("cifar10-job")
    sc, psc = container["securityContext"], pod["securityContext"]
    assert psc["runAsNonRoot"] and psc["runAsUser"] == 10001 and sc["readOnlyRootFilesystem"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/tmp" in mounts  # the only writable paths the job needs besides its outputs
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
    rules = spec["podFailurePolicy"]["rules"]
    fail = [r for r in rules if r["action"] == "FailJob"]
    assert sorted(fail[0]["onExitCodes"]["values"]) == PERMANENT
    counted = [v for r in rules if r["action"] == "Count" for v in r["onExitCodes"]["values"]]
    assert set(RETRYABLE) <= set(counted)
    assert any(r["action"] == "Ignore" and r["onPodConditions"][0]["type"] == "DisruptionTarget" for r in rules)
    assert pod["terminationGracePeriodSeconds"] >= 30
    run_id = next(e for e in container["env"] if e["name"] == "JOB_RUN_ID")
    assert "job-name" in run_id["valueFrom"]["fieldRef"]["fieldPath"]  # stable across retries -> resume


def test_kubeflow_tfjob():
    tfjob = yaml.safe_load((INFRA / "kubeflow" / "tfjob.yaml").read_text())
    assert tfjob["apiVersion"] == "kubeflow.org/v1" and tfjob["kind"] == "TFJob"
    replicas = tfjob["spec"]["tfReplicaSpecs"]
    assert replicas["Chief"]["replicas"] == 1 and replicas["Worker"]["replicas"] >= 1
    for role in ("Chief", "Worker"):
        assert replicas[role]["restartPolicy"] == "ExitCode"
        (container,) = replicas[role]["template"]["spec"]["containers"]
        assert container["name"] == "tensorflow" and container["args"][0] == "train"
        assert "TF_CONFIG" not in {e["name"] for e in container.get("env", [])}  # the operator injects it


def _validate_aws(service: str, operation: str, params: dict) -> None:
    import botocore.session
    from botocore.validate import ParamValidator

    model = botocore.session.get_session().get_service_model(service).operation_model(operation)
    report = ParamValidator().validate(params, model.input_shape)
    assert not report.has_errors(), report.generate_report()


def test_aws_batch_job_definition():
    params = json.loads((INFRA / "aws" / "batch-job-definition.json").read_text())
    _validate_aws("batch", "RegisterJobDefinition", params)
    assert params["containerProperties"]["command"][0] == "train"
    rules = params["retryStrategy"]["evaluateOnExit"]
    actions = {r["onExitCode"]: r["action"] for r in rules if "onExitCode" in r}
    assert all(actions[str(c)] == "EXIT" for c in PERMANENT)
    assert all(actions[str(c)] == "RETRY" for c in RETRYABLE)
    assert params["containerProperties"]["user"] == "10001"


def test_sagemaker_training_job():
    params = json.loads((INFRA / "aws" / "sagemaker-create-training-job.json").read_text())
    _validate_aws("sagemaker", "CreateTrainingJob", params)
    assert params["CheckpointConfig"]["LocalPath"] == "/opt/ml/checkpoints"
    assert {c["ChannelName"] for c in params["InputDataConfig"]} <= {"train", "training"}
    from job.config import hyperparameter_layer

    assert hyperparameter_layer(params["HyperParameters"])  # every hyperparameter is a known setting


def _container_args() -> dict[str, list[str]]:
    k8s = yaml.safe_load((INFRA / "k8s" / "job.yaml").read_text())["spec"]["template"]["spec"]["containers"][0]
    tfjob = yaml.safe_load((INFRA / "kubeflow" / "tfjob.yaml").read_text())["spec"]["tfReplicaSpecs"]
    vertex = yaml.safe_load((INFRA / "vertex" / "custom-job.yaml").read_text())["workerPoolSpecs"][0]
    batch = json.loads((INFRA / "aws" / "batch-job-definition.json").read_text())["containerProperties"]
    return {
        "k8s": k8s["args"],
        "vertex": vertex["containerSpec"]["args"],
        "batch": batch["command"],
        **{f"tfjob-{role}": spec["template"]["spec"]["containers"][0]["args"] for role, spec in tfjob.items()},
    }


@pytest.mark.parametrize("name", sorted(_container_args()))
def test_every_manifest_passes_arguments_the_job_accepts(name):
    """The image's ENTRYPOINT is `python -m job`: each manifest's args must parse with the job's own parser
    (a renamed or removed flag fails here, not on the cluster)."""
    from job.cli import build_parser

    args = [a for a in _container_args()[name] if "Ref::" not in a]  # AWS Batch parameter placeholders
    parsed = build_parser().parse_args(args)
    assert parsed.command == "train"


def test_vertex_custom_job():
    spec = yaml.safe_load((INFRA / "vertex" / "custom-job.yaml").read_text())
    (pool,) = spec["workerPoolSpecs"]
    assert pool["containerSpec"]["args"][0] == "train" and pool["replicaCount"] == 1


@pytest.mark.parametrize("version", ["1.31", "1.37"])
def test_kubernetes_manifests_against_the_real_schema(version):
    """kubernetes-validate holds the API's own JSON schemas (offline). TFJob is a CRD whose schema it does not
    have: its pod templates are validated as core/v1 PodTemplates instead."""
    import kubernetes_validate

    kubernetes_validate.validate(yaml.safe_load((INFRA / "k8s" / "job.yaml").read_text()), version, strict=True)
    tfjob = yaml.safe_load((INFRA / "kubeflow" / "tfjob.yaml").read_text())
    for role, spec in tfjob["spec"]["tfReplicaSpecs"].items():
        template = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": role.lower()},
            "template": spec["template"],
        }
        kubernetes_validate.validate(template, version, strict=True)


def test_kubernetes_validation_fails_on_a_broken_manifest():
    import kubernetes_validate

    job = yaml.safe_load((INFRA / "k8s" / "job.yaml").read_text())
    del job["spec"]["podFailurePolicy"]["rules"][0]["onPodConditions"][0]["status"]  # required by the schema
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, "1.31", strict=True)


def test_vertex_tuning_reads_the_metric_the_job_reports():
    from job.runtime import hptuning

    spec = yaml.safe_load((INFRA / "vertex" / "hptuning-job.yaml").read_text())
    assert [m["metricId"] for m in spec["studySpec"]["metrics"]] == [hptuning.METRIC] == ["val_accuracy"]
    from job.config import hyperparameter_layer

    assert hyperparameter_layer({p["parameterId"]: "1" for p in spec["studySpec"]["parameters"]})
    (pool,) = spec["trialJobSpec"]["workerPoolSpecs"]
    assert pool["containerSpec"]["args"][0] == "train"

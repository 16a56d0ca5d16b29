"""Cloud and cluster manifests, validated offline, and the Dockerfile lint."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import aws_batch
import k8s_manifests as k8s
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


def _batch() -> dict:
    return json.loads((INFRA / "aws" / "batch-job-definition.json").read_text())


def test_aws_batch_job_definition():
    params = _batch()
    _validate_aws("batch", "RegisterJobDefinition", params)
    assert aws_batch.problems(params["retryStrategy"]) == []  # the limits botocore does not know
    assert params["containerProperties"]["command"][0] == "train"
    assert params["containerProperties"]["user"] == "10001"


# What the job's exit codes mean for a retry, from errors.EXIT_CODES: only a preemption and a storage outage can
# succeed on another attempt; everything else (a bug, bad input, a failed gate, Ctrl-C) fails the job at once.
EXPECTED = {code: "RETRY" if code in RETRYABLE else "EXIT" for code in errors.EXIT_CODES if code != 0}


@pytest.mark.parametrize("code", sorted(EXPECTED))
def test_batch_acts_on_every_exit_code_as_the_table_says(code):
    assert aws_batch.action(_batch()["retryStrategy"], exit_code=code) == EXPECTED[code]


def test_batch_retries_a_reclaimed_host_whatever_the_exit_code():
    strategy = _batch()["retryStrategy"]
    for code in (None, 137, 143, 1):  # a Spot reclaim kills the container: any code, or none at all
        assert (
            aws_batch.action(strategy, exit_code=code, status_reason="Host EC2 (instance i-0abc) terminated.")
            == "RETRY"
        )
    assert aws_batch.action(strategy, exit_code=137, status_reason="Essential container in task exited") == "EXIT"


def test_a_sixth_rule_is_refused_like_batch_refuses_it():
    strategy = _batch()["retryStrategy"]
    grown = dict(
        strategy,
        evaluateOnExit=[{"onExitCode": "2", "action": "EXIT"}] * (6 - len(strategy["evaluateOnExit"]))
        + strategy["evaluateOnExit"],
    )
    assert len(grown["evaluateOnExit"]) == 6
    assert aws_batch.problems(grown) == ["evaluateOnExit holds 6 rules; AWS Batch allows up to 5"]
    _validate_aws("batch", "RegisterJobDefinition", {**_batch(), "retryStrategy": grown})  # botocore cannot see it
    assert aws_batch.problems({"attempts": 11, "evaluateOnExit": [{"onExitCode": "1x", "action": "RETRY"}]}) == [
        "attempts must be 1 to 10, is 11",
        "rule 0: onExitCode '1x' is not a pattern AWS Batch accepts",
    ]


def test_sagemaker_training_job():
    params = json.loads((INFRA / "aws" / "sagemaker-create-training-job.json").read_text())
    _validate_aws("sagemaker", "CreateTrainingJob", params)
    assert params["CheckpointConfig"]["LocalPath"] == "/opt/ml/checkpoints"
    assert {c["ChannelName"] for c in params["InputDataConfig"]} <= {"train", "training"}
    from job.config import hyperparameter_layer

    assert hyperparameter_layer(params["HyperParameters"])  # every hyperparameter is a known setting


def _container_args() -> dict[str, list[str]]:
    job = yaml.safe_load((INFRA / "k8s" / "job.yaml").read_text())["spec"]["template"]["spec"]["containers"][0]
    indexed = k8s.docs(INFRA / "k8s" / "indexed-job.yaml")[1]["spec"]["template"]["spec"]["containers"][0]
    jobset = k8s.docs(INFRA / "jobset" / "jobset.yaml")[0]["spec"]["replicatedJobs"][0]["template"]["spec"]
    trainjob = k8s.docs(INFRA / "kubeflow" / "trainjob.yaml")[1]["spec"]["trainer"]
    tfjob = yaml.safe_load((INFRA / "kubeflow" / "tfjob.yaml").read_text())["spec"]["tfReplicaSpecs"]
    vertex = yaml.safe_load((INFRA / "vertex" / "custom-job.yaml").read_text())["workerPoolSpecs"][0]
    batch = json.loads((INFRA / "aws" / "batch-job-definition.json").read_text())["containerProperties"]
    gpu = {
        f"k8s-{path.stem}": yaml.safe_load(path.read_text())["spec"]["template"]["spec"]["containers"][0]["args"]
        for path in sorted((INFRA / "k8s").glob("job-gpu-*.yaml"))
    }
    gpu["vertex-gpu"] = yaml.safe_load((INFRA / "vertex" / "custom-job-gpu.yaml").read_text())["workerPoolSpecs"][0][
        "containerSpec"
    ]["args"]
    gpu["batch-gpu"] = json.loads((INFRA / "aws" / "batch-job-definition-gpu.json").read_text())["containerProperties"][
        "command"
    ]
    (katib,) = k8s.docs(INFRA / "katib" / "experiment.yaml")
    trial = katib["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]
    assert trial["command"] == ["python", "-m", "job"]  # the image's ENTRYPOINT, spelled out for Katib's wrapper
    gpu["katib-trial"] = [
        a.replace("${trialParameters.learningRate}", "0.001").replace("${trialParameters.momentum}", "0.9")
        for a in trial["args"]
    ]
    return {
        **gpu,
        "k8s": job["args"],
        "k8s-indexed": indexed["args"],
        "jobset": jobset["template"]["spec"]["containers"][0]["args"],
        "trainjob": trainjob["args"],
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
    # AIP_TENSORBOARD_LOG_DIR is set only when the job names a TensorBoard instance and a service account
    assert spec["tensorboard"].split("/")[-2] == "tensorboards" and spec["serviceAccount"].endswith(
        ".gserviceaccount.com"
    )
    scheduling = spec["scheduling"]
    assert scheduling["timeout"].endswith("s") and scheduling["restartJobOnWorkerRestart"] is False
    assert scheduling["strategy"] in ("STANDARD", "SPOT", "FLEX_START")


def test_vertex_multiworker_custom_job_restarts_all_workers_together():
    from job.cli import build_parser

    spec = yaml.safe_load((INFRA / "vertex" / "custom-job-multiworker.yaml").read_text())
    assert spec["scheduling"]["restartJobOnWorkerRestart"] is True and spec["tensorboard"]
    pools = spec["workerPoolSpecs"]
    assert len(pools) == 2 and pools[0]["replicaCount"] == 1  # the chief pool, then the workers
    for pool in pools:
        assert build_parser().parse_args(pool["containerSpec"]["args"]).command == "train"


@pytest.mark.parametrize("version", ["1.31", "1.37"])
def test_kubernetes_manifests_against_the_real_schema(version):
    """kubernetes-validate holds the API's own JSON schemas (offline). TFJob is a CRD whose schema it does not
    have: its pod templates are validated as core/v1 PodTemplates instead."""
    import kubernetes_validate

    for path in [INFRA / "k8s" / "job.yaml", *sorted((INFRA / "k8s").glob("job-gpu-*.yaml"))]:
        kubernetes_validate.validate(yaml.safe_load(path.read_text()), version, strict=True)
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


# ------------------------------------------------------------------ Trainer v2, JobSet, Indexed Job


def test_custom_resources_validate_against_their_crds():
    """TrainJob, TrainingRuntime, JobSet and the legacy TFJob against the real CRD schemas (jsonschema)."""
    checked = []
    for path in (
        INFRA / "kubeflow" / "trainjob.yaml",
        INFRA / "jobset" / "jobset.yaml",
        INFRA / "kubeflow" / "tfjob.yaml",
    ):
        for doc in k8s.docs(path):
            k8s.validate_cr(doc)
            checked.append(doc["kind"])
    assert sorted(checked) == ["JobSet", "TFJob", "TrainJob", "TrainingRuntime"]


def test_a_broken_custom_resource_fails_its_crd():
    import jsonschema

    runtime, trainjob = k8s.docs(INFRA / "kubeflow" / "trainjob.yaml")
    bad = {**trainjob, "spec": {**trainjob["spec"], "trainer": {**trainjob["spec"]["trainer"], "numNodes": "two"}}}
    with pytest.raises(jsonschema.ValidationError, match="two"):
        k8s.validate_cr(bad)
    with pytest.raises(jsonschema.ValidationError, match="runtimeRef"):
        k8s.validate_cr({**trainjob, "spec": {"trainer": trainjob["spec"]["trainer"]}})


@pytest.mark.parametrize("version", ["1.31", "1.37"])
def test_core_kinds_inside_the_new_manifests_against_the_real_schema(version):
    import kubernetes_validate

    for doc in k8s.docs(INFRA / "k8s" / "indexed-job.yaml"):
        kubernetes_validate.validate(doc, version, strict=True)
    (jobset,) = k8s.docs(INFRA / "jobset" / "jobset.yaml")
    runtime, _ = k8s.docs(INFRA / "kubeflow" / "trainjob.yaml")
    for name, job_spec in (
        ("jobset-node", jobset["spec"]["replicatedJobs"][0]["template"]["spec"]),
        ("runtime-node", runtime["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]),
    ):
        job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": job_spec}
        kubernetes_validate.validate(job, version, strict=True)


@pytest.mark.parametrize("kind", ["indexed", "jobset", "trainjob"])
def test_every_pod_of_a_manifest_derives_the_same_cluster_and_one_chief(kind):
    from job.runtime.platform import detect

    platforms = [detect(env) for env in k8s.pods(kind)]
    clusters = {json.dumps(p.tf_config["cluster"]) for p in platforms}
    assert len(clusters) == 1 and [p.is_chief for p in platforms] == [True, False]
    assert sorted(p.tf_config["task"]["index"] for p in platforms) == [0, 1]
    print(f"{kind}: {platforms[0].name} {clusters.pop()}")


def test_kserve_inference_services_validate_and_point_at_an_exported_repository():
    """Both formats against the real InferenceService CRD: `onnx` on the Triton runtime with protocol v2 (a model
    repository), `tensorflow` on the repository's `<name>-tf` folder (TF Serving's numbered versions)."""
    onnx_isvc, tf_isvc = (k8s.docs(INFRA / "kserve" / f"inferenceservice-{f}.yaml")[0] for f in ("onnx", "tensorflow"))
    for doc in (onnx_isvc, tf_isvc):
        k8s.validate_cr(doc)
    model = onnx_isvc["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "onnx" and model["runtime"] == "kserve-tritonserver"
    assert model["protocolVersion"] == "v2"
    tf_model = tf_isvc["spec"]["predictor"]["model"]
    assert tf_model["modelFormat"]["name"] == "tensorflow"
    # the same export: Triton's root holds only Triton models, TF Serving's base path only numbered versions
    assert model["storageUri"].endswith("/triton")
    assert tf_model["storageUri"] == model["storageUri"].removesuffix("/triton") + "/tensorflow/cifar10"
    # KServe's default TensorFlow runtime (2.6) cannot load a TF 2.21 SavedModel: a version make test-serving proves
    proven = {
        re.search(r"tensorflow-cpu==(\d+\.\d+)", f.read_text()).group(1) for f in (INFRA / "serving").glob("tf-*.txt")
    }
    assert proven == {"2.15", "2.20"}
    assert ".".join(tf_model["runtimeVersion"].split(".")[:2]) in proven

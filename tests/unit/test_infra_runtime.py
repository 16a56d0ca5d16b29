"""infra/ as the platforms run it, not only as their schemas validate it: every pod template against Pod Security
"restricted", every exit code of job/errors.py through each manifest's failure handling as the Job controller, the
JobSet controller and the training operator evaluate it (tests/k8s_policy.py), deadlines and TTLs, the GPU and Spot
variants, Kueue, the sweeps (Katib Experiment, SageMaker tuning job) and what they read."""

import json
import re
from pathlib import Path

import k8s_manifests as k8s
import k8s_policy as policy
import pytest
import yaml

from helpers import ROOT
from job import errors

INFRA = ROOT / "infra"
PERMANENT = sorted(errors.PERMANENT_EXIT_CODES)
CODES = sorted(c for c in errors.EXIT_CODES if c != 0)
KATIB_REGEX = r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)"  # Katib's default StdOut filter


def _yaml_files() -> list[Path]:
    return sorted(p for p in INFRA.rglob("*.yaml") if "image" not in p.parts)


def _templates() -> dict[str, dict]:
    found = {}
    for path in _yaml_files():
        for i, doc in enumerate(k8s.docs(path)):
            for where, pod in policy.pod_specs(doc):
                found[f"{path.relative_to(INFRA)}#{i}:{where}"] = pod
    return found


TEMPLATES = _templates()


def test_the_pod_templates_found_are_every_workload_in_infra():
    """The walk finds every PodSpec, wherever its kind nests it (a new manifest is checked without listing it)."""
    files = {key.split("#")[0] for key in TEMPLATES}
    assert files >= {
        "k8s/job.yaml",
        "k8s/indexed-job.yaml",
        "k8s/job-gpu-gke-spot.yaml",
        "k8s/job-gpu-karpenter-spot.yaml",
        "jobset/jobset.yaml",
        "kubeflow/trainjob.yaml",
        "kubeflow/tfjob.yaml",
        "katib/experiment.yaml",
        "serve/deployment.yaml",
        "serve/inferenceservice.yaml",  # its predictor's containers (KServe adds its own beside them)
    }
    assert len([k for k in TEMPLATES if k.startswith("kubeflow/tfjob.yaml")]) == 2  # Chief and Worker


@pytest.mark.parametrize("where", sorted(TEMPLATES))
def test_every_pod_template_passes_pod_security_restricted(where):
    assert policy.restricted_problems(TEMPLATES[where]) == []


def test_restricted_refuses_what_the_docs_refuse():
    job = yaml.safe_load((INFRA / "k8s" / "job.yaml").read_text())
    pod = job["spec"]["template"]["spec"]
    assert policy.restricted_problems(pod) == []
    no_seccomp = json.loads(json.dumps(pod))
    del no_seccomp["securityContext"]["seccompProfile"]
    assert policy.restricted_problems(no_seccomp) == [
        "job: seccompProfile must be RuntimeDefault or Localhost (pod or container)"
    ]
    bad = json.loads(json.dumps(pod))
    bad["hostNetwork"] = True
    bad["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    container = bad["containers"][0]
    container["securityContext"].update(allowPrivilegeEscalation=True, capabilities={"add": ["SYS_ADMIN"]})
    container["securityContext"]["seccompProfile"] = {"type": "Unconfined"}
    container["ports"] = [{"containerPort": 2222, "hostPort": 2222}]
    del bad["securityContext"]["runAsNonRoot"]
    assert policy.restricted_problems(bad) == [
        "hostNetwork is set",
        "job: seccompProfile Unconfined",
        "volume host: hostPath",
        "volume host: type ['hostPath'] not allowed",
        "job: hostPort",
        "job: adds capabilities beyond baseline",
        "job: allowPrivilegeEscalation must be false",
        "job: runAsNonRoot must be true (pod or container)",
        "job: seccompProfile must be RuntimeDefault or Localhost (pod or container)",
        "job: capabilities must drop ALL",
        "job: may add only NET_BIND_SERVICE",
    ]


# ------------------------------------------------------------------ failure handling, code by code


def _jobs() -> dict[str, tuple[dict, str, bool]]:
    """name -> (Job spec, the training container's name, multi-worker)."""
    out = {}
    for path in [INFRA / "k8s" / "job.yaml", *sorted((INFRA / "k8s").glob("job-gpu-*.yaml"))]:
        spec = yaml.safe_load(path.read_text())["spec"]
        out[path.stem] = (spec, spec["template"]["spec"]["containers"][0]["name"], False)
    indexed = k8s.docs(INFRA / "k8s" / "indexed-job.yaml")[1]["spec"]
    out["indexed-job"] = (indexed, "train", True)
    (katib,) = k8s.docs(INFRA / "katib" / "experiment.yaml")
    trial = katib["spec"]["trialTemplate"]["trialSpec"]["spec"]
    out["katib-trial"] = (trial, katib["spec"]["trialTemplate"]["primaryContainerName"], False)
    return out


def _jobsets() -> dict[str, tuple[dict, dict, str]]:
    """name -> (JobSet spec, its replicated Job, the training container's name)."""
    (jobset,) = k8s.docs(INFRA / "jobset" / "jobset.yaml")
    runtime, _ = k8s.docs(INFRA / "kubeflow" / "trainjob.yaml")
    out = {}
    for name, spec in (("jobset", jobset["spec"]), ("trainingruntime", runtime["spec"]["template"]["spec"])):
        (rjob,) = spec["replicatedJobs"]
        out[name] = (spec, rjob, rjob["template"]["spec"]["template"]["spec"]["containers"][0]["name"])
    return out


JOBS, JOBSETS = _jobs(), _jobsets()


@pytest.mark.parametrize("code", CODES)
@pytest.mark.parametrize("name", sorted(JOBS))
def test_a_job_acts_on_every_exit_code_as_the_table_says(name, code):
    spec, container, multiworker = JOBS[name]
    outcome = policy.job_outcome(spec, container=container, exit_code=code)
    if code in PERMANENT:
        assert outcome == "fail"  # at once: no retry can fix it
    elif code == errors.EXIT_PREEMPTED and multiworker:
        assert outcome == "retry-free"  # the surviving worker of a preempted peer
    elif code in errors.RETRYABLE_EXIT_CODES:
        assert outcome == "retry-counted"
    else:
        assert outcome in ("retry-counted", "fail")  # bounded by backoffLimit
    # preempted or evicted: whatever the code, it does not count
    disrupted = policy.job_outcome(spec, container=container, exit_code=code, conditions=["DisruptionTarget"])
    assert disrupted == "retry-free"


@pytest.mark.parametrize("code", CODES)
@pytest.mark.parametrize("name", sorted(JOBSETS))
def test_a_jobset_acts_on_every_exit_code_as_the_table_says(name, code):
    """backoffLimit 0: every pod failure fails its Job; the JobSet's rules read the Job's failure reason and message."""
    spec, rjob, container = JOBSETS[name]
    assert rjob["template"]["spec"]["backoffLimit"] == 0
    outcome = policy.jobset_outcome(spec, rjob, container=container, exit_code=code)
    if code in PERMANENT:
        assert outcome == "fail"
    elif code == errors.EXIT_PREEMPTED:
        assert outcome == "retry-free"  # all workers restart together, no restart used up
    else:
        assert outcome == "retry-counted"  # 1, 4, 8, 130: at most maxRestarts
    assert policy.jobset_outcome(spec, rjob, container=container, exit_code=code, conditions=["DisruptionTarget"]) == (
        "retry-free"
    )
    assert policy.deadline_outcome(spec, rjob) == "fail"


def test_the_emulated_controllers_read_the_rules_in_order():
    spec, rjob, container = JOBSETS["jobset"]
    job = rjob["template"]["spec"]
    assert policy.job_failure(job, container=container, exit_code=3, pod="ns/p-0") == (
        "PodFailurePolicy",
        "Container train for pod ns/p-0 failed with exit code 3 matching FailJob rule at index 1",
    )
    assert policy.job_failure(job, container=container, exit_code=143, conditions=["DisruptionTarget"]) == (
        "PodFailurePolicy",
        "Pod ns/pod has condition DisruptionTarget matching FailJob rule at index 0",
    )
    assert policy.job_failure(job, container=container, exit_code=4)[0] == "BackoffLimitExceeded"
    assert policy.job_failure(job, container="sidecar", exit_code=3)[0] == "BackoffLimitExceeded"  # containerName
    assert policy.jobset_outcome(
        {**spec, "failurePolicy": {"maxRestarts": 3}}, rjob, container=container, exit_code=3
    ) == (
        "retry-counted"  # without the rules a permanent failure restarts 3 times: what the rules are for
    )
    assert (
        policy.jobset_outcome(
            {k: v for k, v in spec.items() if k != "failurePolicy"}, rjob, container=container, exit_code=143
        )
        == "fail"
    )


@pytest.mark.parametrize("code", CODES)
def test_a_tfjob_acts_on_every_exit_code_as_exitcode_policy_says(code):
    """restartPolicy ExitCode (Training Operator v1): 1-127 fail the replica for good, 128-255 restart it."""
    (tfjob,) = k8s.docs(INFRA / "kubeflow" / "tfjob.yaml")
    for spec in tfjob["spec"]["tfReplicaSpecs"].values():
        assert spec["restartPolicy"] == "ExitCode"
    retried = code >= 128
    if code in PERMANENT:
        assert not retried
    if code == errors.EXIT_PREEMPTED:
        assert retried


def test_every_workload_has_a_deadline_and_a_ttl():
    for name, (spec, _, _) in JOBS.items():
        assert spec["activeDeadlineSeconds"] > 0 and spec["ttlSecondsAfterFinished"] > 0, name
        assert spec["template"]["spec"]["terminationGracePeriodSeconds"] >= 30, name
    for name, (spec, rjob, _) in JOBSETS.items():
        assert spec["ttlSecondsAfterFinished"] > 0 and rjob["template"]["spec"]["activeDeadlineSeconds"] > 0, name
    _, trainjob = k8s.docs(INFRA / "kubeflow" / "trainjob.yaml")
    assert (
        trainjob["spec"]["activeDeadlineSeconds"]
        > JOBSETS["trainingruntime"][1]["template"]["spec"]["activeDeadlineSeconds"]
    )
    (tfjob,) = k8s.docs(INFRA / "kubeflow" / "tfjob.yaml")
    run_policy = tfjob["spec"]["runPolicy"]
    assert run_policy["activeDeadlineSeconds"] > 0 and run_policy["ttlSecondsAfterFinished"] > 0


def test_indexed_job_peers_find_each_other_before_ready():
    service, _ = k8s.docs(INFRA / "k8s" / "indexed-job.yaml")
    assert service["spec"]["publishNotReadyAddresses"] is True


def test_tfjob_restarts_resume_from_a_shared_checkpoint():
    (tfjob,) = k8s.docs(INFRA / "kubeflow" / "tfjob.yaml")
    for spec in tfjob["spec"]["tfReplicaSpecs"].values():
        pod = spec["template"]["spec"]
        (container,) = pod["containers"]
        directory = container["args"][container["args"].index("--checkpoint-dir") + 1]
        assert directory in {m["mountPath"] for m in container["volumeMounts"]}
        volume = next(v for v in pod["volumes"] if v["name"] == "checkpoints")
        assert "persistentVolumeClaim" in volume  # shared by every replica, survives the pods


def test_the_training_runtime_gives_its_node_the_s3_credentials():
    """A TrainJob's trainer offers only env: the runtime must carry the service account and the Secret."""
    runtime, trainjob = k8s.docs(INFRA / "kubeflow" / "trainjob.yaml")
    pod = runtime["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"]
    (node,) = pod["containers"]
    assert node["name"] == "node" and node["envFrom"][0]["secretRef"]["name"] == "cifar10-job-s3"
    assert any(e["value"].startswith("s3://") for e in trainjob["spec"]["trainer"]["env"] if e["name"] == "JOB_OUT")


# ------------------------------------------------------------------ GPU, Spot, Kueue


def _gpu_jobs() -> list[dict]:
    return [yaml.safe_load(p.read_text()) for p in sorted((INFRA / "k8s").glob("job-gpu-*.yaml"))]


def test_gpu_kubernetes_jobs_ask_for_a_gpu_on_spot_through_kueue():
    selectors = {}
    for job in _gpu_jobs():
        pod = job["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert int(container["resources"]["limits"]["nvidia.com/gpu"]) == 1
        assert (
            container["image"].endswith(":gpu")
            and "auto" == container["args"][container["args"].index("--precision") + 1]
        )
        tolerations = {t["key"]: t for t in pod["tolerations"]}
        assert tolerations["nvidia.com/gpu"]["operator"] == "Exists"
        assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"]
        selectors.update(pod["nodeSelector"])
        if "cloud.google.com/gke-spot" in pod["nodeSelector"]:
            assert tolerations["cloud.google.com/gke-spot"]["value"] == "true"
    assert selectors["cloud.google.com/gke-spot"] == "true" and selectors["karpenter.sh/capacity-type"] == "spot"


def _validate_aws(service: str, operation: str, params: dict) -> None:
    import botocore.session
    from botocore.validate import ParamValidator

    model = botocore.session.get_session().get_service_model(service).operation_model(operation)
    report = ParamValidator().validate(params, model.input_shape)
    assert not report.has_errors(), report.generate_report()


def test_batch_job_definitions_log_and_the_gpu_one_asks_for_a_gpu():
    import aws_batch

    for name in ("batch-job-definition.json", "batch-job-definition-gpu.json"):
        params = json.loads((INFRA / "aws" / name).read_text())
        _validate_aws("batch", "RegisterJobDefinition", params)
        assert aws_batch.problems(params["retryStrategy"]) == []
        assert params["containerProperties"]["logConfiguration"]["logDriver"] == "awslogs"
    gpu = json.loads((INFRA / "aws" / "batch-job-definition-gpu.json").read_text())["containerProperties"]
    needs = {r["type"]: r["value"] for r in gpu["resourceRequirements"]}
    assert needs["GPU"] == "1" and gpu["image"].endswith(":gpu") and "--precision" in gpu["command"]
    assert (
        json.loads((INFRA / "aws" / "batch-job-definition.json").read_text())["retryStrategy"]
        == json.loads((INFRA / "aws" / "batch-job-definition-gpu.json").read_text())["retryStrategy"]
    )


def _sagemaker(name: str) -> dict:
    return json.loads((INFRA / "aws" / name).read_text())


def test_sagemaker_training_requests_read_the_tarball_and_keep_tensorboard():
    from job.config import hyperparameter_layer

    data = yaml.safe_load((INFRA / "k8s" / "job.yaml").read_text())["spec"]["template"]["spec"]["containers"][0]
    tarball = next(e["value"] for e in data["env"] if e["name"] == "JOB_DATA")
    for name in ("sagemaker-create-training-job.json", "sagemaker-create-training-job-gpu.json"):
        params = _sagemaker(name)
        _validate_aws("sagemaker", "CreateTrainingJob", params)
        (channel,) = params["InputDataConfig"]
        assert channel["DataSource"]["S3DataSource"]["S3Uri"] == tarball  # the archive every manifest trains on
        assert channel["ContentType"] == "application/gzip"  # a .tar.gz, not application/x-tar
        assert params["TensorBoardOutputConfig"]["LocalPath"] == "/opt/ml/output/tensorboard"  # where the job writes
        assert hyperparameter_layer(params["HyperParameters"])
    gpu = _sagemaker("sagemaker-create-training-job-gpu.json")
    assert re.fullmatch(r"ml\.g[56]\.\w+", gpu["ResourceConfig"]["InstanceType"])
    assert gpu["HyperParameters"]["precision"] == "auto" and gpu["AlgorithmSpecification"]["TrainingImage"].endswith(
        ":gpu"
    )


def test_vertex_gpu_custom_job():
    spec = yaml.safe_load((INFRA / "vertex" / "custom-job-gpu.yaml").read_text())
    (pool,) = spec["workerPoolSpecs"]
    machine = pool["machineSpec"]
    # the AcceleratorType enum of google.cloud.aiplatform.v1.MachineSpec, and the machine series each attaches to
    assert machine["acceleratorType"] in {
        "NVIDIA_TESLA_T4", "NVIDIA_TESLA_V100", "NVIDIA_TESLA_P100", "NVIDIA_TESLA_P4", "NVIDIA_TESLA_A100",
        "NVIDIA_A100_80GB", "NVIDIA_L4", "NVIDIA_H100_80GB", "NVIDIA_H100_MEGA_80GB", "NVIDIA_H200_141GB",
    }  # fmt: skip
    assert machine["acceleratorCount"] >= 1 and machine["machineType"].startswith("g2-")  # L4 attaches to G2 only
    assert pool["containerSpec"]["imageUri"].endswith(":gpu")
    assert spec["scheduling"]["strategy"] == "SPOT" and spec["scheduling"]["timeout"].endswith("s")


def test_precision_auto_picks_what_the_gpu_supports():
    from job.runtime import resources

    assert resources.auto_precision({"avx2"}, gpus=[(8, 6)]) == (
        "mixed_bfloat16",
        "GPU compute capability 8.6: bf16 tensor cores",
    )
    assert resources.auto_precision({"amx_bf16"}, gpus=[(9, 0), (7, 5)])[0] == "float32"  # every GPU must have them
    assert resources.auto_precision({"amx_bf16"}, gpus=[])[0] == "mixed_bfloat16"  # no GPU: the CPU decides
    assert resources.gpu_compute_capabilities() == []  # tensorflow-cpu trains on no GPU, whatever the host has


# ------------------------------------------------------------------ sweeps


def _experiment() -> dict:
    (doc,) = k8s.docs(INFRA / "katib" / "experiment.yaml")
    return doc


def test_katib_experiment_validates_against_katibs_own_models():
    """kubeflow-katib-api's generated models (Katib's OpenAPI): wrong types fail, and an unknown field would be
    dropped, so the round trip must give the manifest back whole."""
    import pydantic
    from kubeflow_katib_api.models import V1beta1Experiment

    doc = _experiment()
    assert V1beta1Experiment.from_dict(doc).to_dict() == doc
    with pytest.raises(pydantic.ValidationError, match="maxTrialCount"):
        V1beta1Experiment.from_dict({**doc, "spec": {**doc["spec"], "maxTrialCount": "eight"}})
    misspelt = {**doc, "spec": {**doc["spec"], "objectiv": doc["spec"]["objective"]}}
    assert V1beta1Experiment.from_dict(misspelt).to_dict() != misspelt


@pytest.mark.parametrize("version", ["1.31", "1.37"])
def test_katib_experiment_is_what_katibs_webhook_accepts(version):
    """The checks of Katib's experiment validator that the models cannot make, and the trial Job against the API."""
    import kubernetes_validate

    from job.config import hyperparameter_layer
    from job.runtime import hptuning

    spec = _experiment()["spec"]
    assert spec["objective"]["objectiveMetricName"] == hptuning.METRIC
    assert spec["metricsCollectorSpec"]["collector"]["kind"] == "StdOut"
    assert spec["parallelTrialCount"] <= spec["maxTrialCount"]
    parameters = {p["name"] for p in spec["parameters"]}
    template = spec["trialTemplate"]
    referenced = {t["name"]: t["reference"] for t in template["trialParameters"]}
    assert set(referenced.values()) == parameters
    trial = json.dumps(template["trialSpec"])
    assert set(re.findall(r"\$\{trialParameters\.(\w+)\}", trial)) == set(referenced)
    assert hyperparameter_layer({name: "0.5" for name in parameters})  # every tuned name is a job setting
    job = {**template["trialSpec"], "metadata": {"name": "trial"}}
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["name"] == template["primaryContainerName"]
    # Katib joins command + args into one `sh -c` line: no argument may need quoting
    assert all(re.fullmatch(r"[\w.${}/:-]+", a) for a in container["command"] + container["args"])
    kubernetes_validate.validate(job, version, strict=True)


def test_sagemaker_tuning_job_validates_and_tunes_on_a_metric_it_defines():
    from job.config import hyperparameter_layer

    params = _sagemaker("sagemaker-hyperparameter-tuning-job.json")
    _validate_aws("sagemaker", "CreateHyperParameterTuningJob", params)
    config, definition = params["HyperParameterTuningJobConfig"], params["TrainingJobDefinition"]
    names = [m["Name"] for m in definition["AlgorithmSpecification"]["MetricDefinitions"]]
    assert (
        config["HyperParameterTuningJobObjective"]["MetricName"] == "validation:accuracy"
        and "validation:accuracy" in names
    )
    ranges = [r["Name"] for group in config["ParameterRanges"].values() for r in group]
    assert hyperparameter_layer({**definition["StaticHyperParameters"], **{n: "0.5" for n in ranges}})
    assert not set(ranges) & set(definition["StaticHyperParameters"])


def test_hptuning_fails_with_one_line_where_the_metric_cannot_be_written(tmp_path, monkeypatch):
    """A non-root image where Vertex has the metric written under a folder it cannot create (cloudml-hypertune#6)."""
    from job.errors import ConfigError
    from job.runtime import hptuning

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("CLOUD_ML_TRIAL_ID", "1")
    monkeypatch.setenv("CLOUD_ML_HP_METRIC_FILE", str(blocker / "hypertune" / "output.metrics"))
    monkeypatch.setattr(hptuning, "_tuner", None)
    with pytest.raises(ConfigError) as caught:
        hptuning.report({"epoch": 1, "val_accuracy": 0.5})
    message = str(caught.value)
    assert "\n" not in message and str(blocker / "hypertune" / "output.metrics") in message
    assert "/var/hypertune" in message
    monkeypatch.setenv("CLOUD_ML_HP_METRIC_FILE", str(tmp_path / "ok" / "output.metrics"))
    hptuning.report({"epoch": 1, "val_accuracy": 0.5})
    assert json.loads((tmp_path / "ok" / "output.metrics").read_text())["val_accuracy"] == "0.5"


def test_the_dockerfile_gives_the_job_user_the_vertex_tuning_folder():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"chown 10001:10001 [^\n]*/var/hypertune", text)


def test_katibs_regex_reads_nothing_from_the_json_events_or_the_progress_line():
    """The per-epoch lines other than metrics_line carry no `name=value` pair Katib could take for a metric."""
    event = json.dumps({"event": "epoch", "epoch": 1, "val_accuracy": 0.5, "loss": 1.25})
    progress = "Epoch 1/2 - 3.2s - loss: 2.2000 - accuracy: 0.1500 - val_loss: 2.1000 - val_accuracy: 0.2000"
    assert re.findall(KATIB_REGEX, event) == [] and re.findall(KATIB_REGEX, progress) == []

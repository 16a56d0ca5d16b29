"""The model server's manifests (infra/serve/), validated offline like the training ones: AWS requests against
botocore's service model, Kubernetes kinds against kubernetes-validate's API schemas, the InferenceService against
KServe's CRD, and every container's arguments against the job's own parser. Also the settings `job serve` derives
from a platform's environment."""

import json

import k8s_manifests as k8s
import pytest
import yaml

from helpers import ROOT
from job.errors import ConfigError

SERVE = ROOT / "infra" / "serve"


def _validate_aws(service: str, operation: str, params: dict) -> None:
    import botocore.session
    from botocore.validate import ParamValidator

    model = botocore.session.get_session().get_service_model(service).operation_model(operation)
    report = ParamValidator().validate(params, model.input_shape)
    assert not report.has_errors(), report.generate_report()


def _parse(args: list[str]):
    from job.cli import build_parser

    parsed = build_parser().parse_args(args)
    assert parsed.command == "serve"
    return parsed


def _pod(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"] if doc["kind"] == "Deployment" else doc["spec"]["predictor"]


def test_sagemaker_model_and_endpoint_config():
    model = json.loads((SERVE / "sagemaker-create-model.json").read_text())
    config = json.loads((SERVE / "sagemaker-endpoint-config.json").read_text())
    _validate_aws("sagemaker", "CreateModel", model)
    _validate_aws("sagemaker", "CreateEndpointConfig", config)
    assert config["ProductionVariants"][0]["ModelName"] == model["ModelName"]
    source = model["PrimaryContainer"]["ModelDataSource"]["S3DataSource"]
    assert source["CompressionType"] == "None" and source["S3DataType"] == "S3Prefix"  # the run folder, as published
    # SageMaker starts the image with the one argument `serve`: the model comes from /opt/ml/model
    assert _parse(["serve"]).model is None


def test_a_broken_sagemaker_request_fails_validation():
    model = json.loads((SERVE / "sagemaker-create-model.json").read_text())
    del model["PrimaryContainer"]["Image"]
    model["PrimaryContainer"]["Imag"] = "typo"
    with pytest.raises(AssertionError):
        _validate_aws("sagemaker", "CreateModel", model)


def test_vertex_model_upload_and_deploy():
    upload = json.loads((SERVE / "vertex-model-upload.json").read_text())["model"]
    deploy = json.loads((SERVE / "vertex-endpoint-deploy.json").read_text())
    spec = upload["containerSpec"]
    assert spec["ports"] == [{"containerPort": 8080}] and spec["predictRoute"] and spec["healthRoute"]
    assert upload["artifactUri"].startswith("gs://")  # Vertex AI passes it as AIP_STORAGE_URI
    assert _parse(spec["args"]).model is None
    resources = deploy["deployedModel"]["dedicatedResources"]
    assert resources["minReplicaCount"] >= 1 and resources["machineSpec"]["machineType"]
    assert sum(deploy["trafficSplit"].values()) == 100


@pytest.mark.parametrize("version", ["1.31", "1.37"])
def test_deployment_service_and_hpa_against_the_real_schema(version):
    import kubernetes_validate

    docs = k8s.docs(SERVE / "deployment.yaml")
    assert [d["kind"] for d in docs] == ["Deployment", "Service", "HorizontalPodAutoscaler"]
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_inference_service_against_kserves_crd():
    (isvc,) = k8s.docs(SERVE / "inferenceservice.yaml")
    k8s.validate_cr(isvc)
    broken = yaml.safe_load(yaml.safe_dump(isvc))
    broken["spec"]["predictor"]["containers"][0]["ports"] = "8080"
    with pytest.raises(Exception, match="8080"):
        k8s.validate_cr(broken)


@pytest.mark.parametrize("name", ["deployment.yaml", "inferenceservice.yaml"])
def test_serving_pods_are_locked_down_and_probe_readiness(name):
    doc = k8s.docs(SERVE / name)[0]
    pod = _pod(doc)
    (container,) = pod["containers"]
    args = _parse(container["args"])
    assert args.port == 8080 and container["ports"][0]["containerPort"] == 8080
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert (pod.get("securityContext") or sc)["runAsUser"] == 10001
    grace = pod.get("terminationGracePeriodSeconds", 30)  # Kubernetes' default
    assert args.grace_s + args.drain_delay_s < grace  # the drain ends before the kubelet's SIGKILL


def test_settings_from_vertex_variables(tmp_path):
    from job.serve.settings import resolve

    args = _parse(["serve"])
    env = {
        "AIP_HTTP_PORT": "8081",
        "AIP_HEALTH_ROUTE": "/v1/endpoints/1/deployedModels/2",
        "AIP_PREDICT_ROUTE": "/v1/endpoints/1/deployedModels/2:predict",
        "AIP_STORAGE_URI": "gs://bucket/path/model/",
    }
    s = resolve(args, env)
    assert (s.port, s.health_route, s.predict_route) == (8081, env["AIP_HEALTH_ROUTE"], env["AIP_PREDICT_ROUTE"])
    assert s.model.endswith("/bucket/path/model")
    assert resolve(_parse(["serve", "--port", "9000"]), {**env, "AIP_STORAGE_URI": "s3://b/p"}).model == "s3://b/p"
    for bad in ({"AIP_HTTP_PORT": "80; rm"}, {"AIP_PREDICT_ROUTE": "predict\nX-Evil: 1"}):
        with pytest.raises(ConfigError):
            resolve(args, {**env, **bad})
    for flags in (["--max-batch", "0"], ["--max-queue", "2", "--max-batch", "8"], ["--model-name", "a/b"]):
        with pytest.raises(ConfigError):
            resolve(_parse(["serve", "m.onnx", *flags]), {})
    with pytest.raises(ConfigError, match="AIP_STORAGE_URI"):
        resolve(args, {})

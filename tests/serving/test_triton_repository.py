"""A model repository written by `job runs export-serving` from a real run, read the way Triton and KServe read
it: config.pbtxt parsed with Triton's own ModelConfig protobuf (shipped in tritonclient, in its own venv), Triton's
loading rules run over every top-level folder of the repository (tests/serving/model_repositories.py), both
InferenceServices resolved to the folders they name, every tensor's name, type and shape compared with the ONNX
graph, the copied files hashed against the run's manifest, and an Open Inference Protocol request built from the
contract checked against the config. One run per layout the SavedModel can be in (runs, SageMaker, Vertex)."""

import json
import re
import shutil
import subprocess
from functools import cache

import k8s_manifests as k8s
import numpy as np
import onnx
import pytest
from model_repositories import tf_serving_problems, triton_repository_problems
from venvs import compat_venv

from helpers import ROOT, make_image_tree, make_tar, run_job, train_args
from job.serving import v2_request
from job.storage.files import sha256_file

PARSE = """
import json, sys
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2
config = text_format.Parse(open(sys.argv[1]).read(), model_config_pb2.ModelConfig())
print(json_format.MessageToJson(config, preserving_proto_field_name=True))
"""
ONNX_TO_TRITON = {onnx.TensorProto.UINT8: "TYPE_UINT8", onnx.TensorProto.FLOAT: "TYPE_FP32"}
V2_TO_TRITON = {"UINT8": "TYPE_UINT8", "FP32": "TYPE_FP32"}


SAVEDMODEL_IN = {"runs": "saved_model/", "sagemaker": "1/", "vertex": ""}  # where each layout's run holds it


@cache
def parse_config(path) -> dict:
    """config.pbtxt through Triton's own ModelConfig protobuf: a file Triton cannot parse fails here."""
    python = compat_venv(ROOT / "infra" / "serving" / "tritonclient.txt")
    parsed = subprocess.run([str(python), "-c", PARSE, str(path)], capture_output=True, text=True)
    assert parsed.returncode == 0, parsed.stderr[-2000:]
    return json.loads(parsed.stdout)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    base = tmp_path_factory.mktemp("triton-data")
    return {"tar": make_tar(make_image_tree(base / "tree", per_class=12), base / "tiny.tar.gz"), "cache": base / "c"}


@pytest.fixture(scope="module", params=sorted(SAVEDMODEL_IN))
def repository(request, tiny_data, tmp_path_factory):
    layout = request.param
    base = tmp_path_factory.mktemp(f"triton-{layout}")
    out = base / "store"
    args = train_args(tiny_data["tar"], out, run_id="r1", cache=tiny_data["cache"], layout=layout)
    run = run_job(*args)
    assert run.returncode == 0, run.stderr[-3000:]
    # a flat run folder (SageMaker / Vertex model directory) is itself the run: no run id
    proc = run_job("runs", "export-serving", str(out), "latest" if layout == "runs" else "", str(base / "repo"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = out / "r1" if layout == "runs" else out
    return {"repo": base / "repo", "run": run_dir, "layout": layout, "event": json.loads(proc.stdout.splitlines()[-1])}


def test_triton_loads_every_top_level_folder_of_the_repository(repository):
    """Triton tries every top-level folder and, with its default --exit-on-error, refuses to start when one fails:
    the Triton root holds only models it loads, and the SavedModel sits apart, where TensorFlow Serving loads it."""
    repo = repository["repo"]
    assert sorted(p.name for p in repo.iterdir()) == ["tensorflow", "triton"]
    event = repository["event"]
    assert event["triton_repository"] == "triton" and event["tensorflow_model"] == "tensorflow/cifar10"
    assert triton_repository_problems(repo / "triton", parse_config) == []
    assert [p.name for p in (repo / "triton").iterdir()] == ["cifar10"]
    assert (repo / "triton" / "cifar10" / "config.pbtxt").is_file()  # no auto-complete guesswork
    assert tf_serving_problems(repo / "tensorflow" / "cifar10") == []
    assert sorted(p.name for p in (repo / "tensorflow" / "cifar10").iterdir()) == ["1"]


def test_the_rules_refuse_a_savedmodel_beside_the_onnx_model(repository, tmp_path):
    """The layout Triton refused: a SavedModel folder without config.pbtxt, not in model.savedmodel/, at the top."""
    bad = tmp_path / "repo"
    shutil.copytree(repository["repo"] / "triton", bad)
    shutil.copytree(repository["repo"] / "tensorflow" / "cifar10", bad / "cifar10-tf")
    assert triton_repository_problems(bad, parse_config) == [
        "cifar10-tf: no config.pbtxt and no model file Triton recognises"
    ]
    (bad / "cifar10-tf" / "config.pbtxt").write_text('platform: "tensorflow_savedmodel"\nmax_batch_size: 8\n')
    assert triton_repository_problems(bad, parse_config) == [
        "cifar10-tf: version 1 has no model.savedmodel/saved_model.pb"
    ]
    shutil.rmtree(bad / "cifar10-tf")
    assert triton_repository_problems(bad, parse_config) == []


def test_both_inference_services_point_at_folders_that_hold_only_loadable_models(repository):
    """storageUri resolved against the repository that the manifest's own export command writes."""
    onnx_isvc, tf_isvc = (
        k8s.docs(ROOT / "infra" / "kserve" / f"inferenceservice-{f}.yaml")[0] for f in ("onnx", "tensorflow")
    )
    text = (ROOT / "infra" / "kserve" / "inferenceservice-onnx.yaml").read_text()
    dest = re.search(r"runs export-serving \S+ \S+ (s3://\S+)", text).group(1).rstrip("/") + "/"

    def local(isvc):
        uri = isvc["spec"]["predictor"]["model"]["storageUri"]
        assert uri.startswith(dest), (uri, dest)
        return repository["repo"] / uri[len(dest) :]

    assert triton_repository_problems(local(onnx_isvc), parse_config) == []
    assert tf_serving_problems(local(tf_isvc)) == []


def test_triton_parses_the_config_and_it_matches_the_onnx_graph(repository):
    model_dir = repository["repo"] / "triton" / "cifar10"
    config = parse_config(model_dir / "config.pbtxt")
    assert (
        config["name"] == "cifar10" and config["platform"] == "onnxruntime_onnx" and int(config["max_batch_size"]) > 0
    )
    graph = onnx.load(model_dir / "1" / "model.onnx").graph
    for tensors, entries in ((graph.input, config["input"]), (graph.output, config["output"])):
        assert [t.name for t in tensors] == [e["name"] for e in entries]
        for tensor, entry in zip(tensors, entries, strict=True):
            dims = [d.dim_value for d in tensor.type.tensor_type.shape.dim][1:]  # Triton's dims omit the batch
            assert ONNX_TO_TRITON[tensor.type.tensor_type.elem_type] == entry["data_type"]
            assert [int(d) for d in entry["dims"]] == dims
    labels = (model_dir / "labels.txt").read_text().splitlines()
    metadata = {p.key: p.value for p in onnx.load(model_dir / "1" / "model.onnx").metadata_props}
    assert labels == json.loads(metadata["class_names"]) and config["output"][0]["label_filename"] == "labels.txt"

    request = v2_request(np.zeros((2, 32, 32, 3), np.uint8))
    (sent,) = request["inputs"]
    (expected,) = config["input"]
    assert sent["name"] == expected["name"] and V2_TO_TRITON[sent["datatype"]] == expected["data_type"]
    assert sent["shape"][1:] == [int(d) for d in expected["dims"]] and sent["shape"][0] <= int(config["max_batch_size"])
    assert request["outputs"][0]["name"] == config["output"][0]["name"]
    print("Triton ModelConfig:", json.dumps({k: config[k] for k in ("platform", "max_batch_size", "input", "output")}))


def test_what_the_repository_serves_is_what_the_run_published(repository):
    manifest = {f["path"]: f["sha256"] for f in json.loads((repository["run"] / "manifest.json").read_text())["files"]}
    repo = repository["repo"]
    assert sha256_file(repo / "triton" / "cifar10" / "1" / "model.onnx") == manifest["model.onnx"]
    version = repo / "tensorflow" / "cifar10" / "1"
    prefix = SAVEDMODEL_IN[repository["layout"]]
    copied = [f for f in version.rglob("*") if f.is_file()]
    for file in copied:
        assert sha256_file(file) == manifest[f"{prefix}{file.relative_to(version).as_posix()}"]
    assert (version / "saved_model.pb") in copied

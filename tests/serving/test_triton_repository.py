"""A model repository written by `job runs export-serving` from a real run, read the way Triton and KServe read
it: config.pbtxt parsed with Triton's own ModelConfig protobuf (shipped in tritonclient, in its own venv), every
tensor's name, type and shape compared with the ONNX graph, the copied model.onnx hashed against the run's
manifest, and an Open Inference Protocol request built from the contract checked against the config."""

import json
import subprocess

import numpy as np
import onnx
import pytest
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


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    base = tmp_path_factory.mktemp("triton")
    data = make_tar(make_image_tree(base / "tree", per_class=12), base / "tiny.tar.gz")
    run = run_job(*train_args(data, base / "store", run_id="r1", cache=base / "cache"))
    assert run.returncode == 0, run.stderr[-3000:]
    proc = run_job("runs", "export-serving", str(base / "store"), "latest", str(base / "repo"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"repo": base / "repo", "run": base / "store" / "r1", "event": json.loads(proc.stdout)}


def test_triton_parses_the_config_and_it_matches_the_onnx_graph(repository):
    python = compat_venv(ROOT / "infra" / "serving" / "tritonclient.txt")
    model_dir = repository["repo"] / "cifar10"
    parsed = subprocess.run([str(python), "-c", PARSE, str(model_dir / "config.pbtxt")], capture_output=True, text=True)
    assert parsed.returncode == 0, parsed.stderr[-2000:]
    config = json.loads(parsed.stdout)
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
    assert sha256_file(repo / "cifar10" / "1" / "model.onnx") == manifest["model.onnx"]
    for file in (repo / "cifar10-tf" / "1").rglob("*"):
        if file.is_file():
            assert (
                sha256_file(file) == manifest[f"saved_model/{file.relative_to(repo / 'cifar10-tf' / '1').as_posix()}"]
            )
    assert (repo / "cifar10-tf" / "1" / "saved_model.pb").is_file()

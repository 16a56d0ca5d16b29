"""The Open Inference Protocol v2 (KServe's v2, Triton's HTTP API): server and model metadata, and infer with
JSON tensors or the binary tensor extension (what tritonclient sends by default).

    POST /v2/models/{name}[/versions/{v}]/infer
      {"id": "...", "inputs": [{"name": "image", "datatype": "UINT8", "shape": [N, 32, 32, 3], "data": [...]}],
       "outputs": [{"name": "probabilities", "parameters": {"binary_data": false}}]}
    -> {"model_name": ..., "model_version": run id, "id": ..., "outputs": [{"name": "probabilities",
        "datatype": "FP32", "shape": [N, C], "data": [...]}]}
"""

import numpy as np

from job import __version__
from job.contract import INPUT_NAME, OUTPUT_NAME
from job.errors import DataError
from job.gates.json_doc import load_json
from job.serve.http import HTTPError, byte_count, json_bytes
from job.serve.tensors import check_shape, from_bytes, from_values

HEADER_LENGTH = b"inference-header-content-length"


def server_metadata() -> dict:
    return {"name": "cifar10-job", "version": __version__, "extensions": ["binary_tensor_data"]}


def model_metadata(name: str, model) -> dict:
    return {
        "name": name,
        "versions": [model.run_id] if model.run_id else [],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": INPUT_NAME, "datatype": "UINT8", "shape": [-1, 32, 32, 3]}],
        "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, len(model.class_names)]}],
    }


def _request(raw: bytes, max_bytes: int) -> dict:
    try:
        return load_json(raw, "the v2 infer request", max_bytes=max_bytes, expect=dict)
    except DataError as exc:
        raise HTTPError(400, str(exc)) from None


def parse_infer(body: bytes, header_length: str | None, max_batch: int, max_bytes: int):
    """-> (request id or None, uint8 [N, 32, 32, 3], whether the output is wanted as binary)."""
    binary = b""
    if header_length is not None:
        length = byte_count(header_length)
        if length is None or length > len(body):
            raise HTTPError(400, "Inference-Header-Content-Length must be a byte count (ASCII digits) within the body")
        body, binary = body[:length], body[length:]
    doc = _request(body, max_bytes)
    request_id = doc.get("id")
    if request_id is not None and (not isinstance(request_id, str) or len(request_id) > 256):
        raise HTTPError(400, "id must be a string of at most 256 characters")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise HTTPError(400, f"inputs must be a list of one tensor, {INPUT_NAME!r}")
    tensor = inputs[0]
    if tensor.get("name") != INPUT_NAME or tensor.get("datatype") != "UINT8":
        raise HTTPError(400, f"the input must be named {INPUT_NAME!r} with datatype UINT8")
    shape = check_shape(tensor.get("shape"), max_batch, "input 'image'")
    parameters = tensor.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise HTTPError(400, "input parameters must be an object")
    size = parameters.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size != len(binary):
            raise HTTPError(400, "binary_data_size does not match the binary part of the body")
        images = from_bytes(binary, shape, "input 'image'")
    elif binary:
        raise HTTPError(400, "the body has a binary part but the input declares no binary_data_size")
    else:
        images = from_values(tensor.get("data"), shape, max_batch, "input 'image'")
    return request_id, images, _binary_output(doc.get("outputs"))


def _binary_output(outputs) -> bool:
    if outputs is None:
        return False
    if not isinstance(outputs, list) or len(outputs) > 1 or not all(isinstance(o, dict) for o in outputs):
        raise HTTPError(400, f"outputs must be a list of at most one output, {OUTPUT_NAME!r}")
    if outputs and outputs[0].get("name") != OUTPUT_NAME:
        raise HTTPError(400, f"the model has one output, {OUTPUT_NAME!r}")
    parameters = outputs[0].get("parameters") if outputs else None
    return isinstance(parameters, dict) and parameters.get("binary_data") is True


def infer_response(name: str, model, request_id, probs: np.ndarray, binary: bool) -> tuple[bytes, list]:
    """-> (body, extra headers)."""
    output = {"name": OUTPUT_NAME, "datatype": "FP32", "shape": list(probs.shape)}
    if binary:
        raw = np.ascontiguousarray(probs, dtype="<f4").tobytes()
        output["parameters"] = {"binary_data_size": len(raw)}
    else:
        output["data"] = probs.ravel().tolist()
    doc = {"model_name": name, "model_version": model.run_id, "outputs": [output]}
    if request_id is not None:
        doc["id"] = request_id
    head = json_bytes(doc)
    if not binary:
        return head, []
    return head + raw, [(b"inference-header-content-length", str(len(head)).encode())]

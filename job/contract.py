"""The model contract between the training job and every consumer of `model.onnx`.

Imports neither TensorFlow nor Keras: the ONNX-only predictor and downstream code use it as is.

    input   image          uint8  [N, 32, 32, 3]  RGB, NHWC, raw pixel values 0..255, N dynamic
    output  probabilities  float32 [N, C]         softmax over the classes; each row sums to 1
    class order            metadata_props["class_names"], a JSON list; index i = column i
"""

import json

from job.gates.class_names import check_class_names
from job.gates.json_doc import load_json

CONTRACT_VERSION = "1"
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
IMAGE_HEIGHT = IMAGE_WIDTH = 32
CHANNELS = 3
OPSET = 17

# metadata_props keys written into every model.onnx (values are strings).
METADATA_KEYS = {
    "contract_version": "version of this contract",
    "class_names": "JSON list of class names; index i is output column i",
    "input_name": "name of the input tensor ('image')",
    "input_layout": "'NHWC'",
    "input_dtype": "'uint8'",
    "input_range": "'0..255' (raw pixels; scaling happens inside the graph)",
    "input_color": "'RGB'",
    "output_name": "name of the output tensor ('probabilities')",
    "run_id": "the training run that produced the model",
    "preset": "the training preset",
    "test_accuracy": "Keras accuracy on the run's held-out test split",
    "tta": "'true' when test-time augmentation is folded into the graph",
    "tta_level": "'0' none, '1' mirror, '2' mirror + 1-pixel translations (airbench's levels)",
    "versions": "JSON object of producer versions (tensorflow, keras, tf2onnx, onnx, job)",
}


def metadata(
    class_names: list[str], *, run_id: str, preset: str, test_accuracy: float, tta_level: int, versions: dict
) -> dict[str, str]:
    return {
        "contract_version": CONTRACT_VERSION,
        "class_names": json.dumps(list(class_names)),
        "input_name": INPUT_NAME,
        "input_layout": "NHWC",
        "input_dtype": "uint8",
        "input_range": "0..255",
        "input_color": "RGB",
        "output_name": OUTPUT_NAME,
        "run_id": run_id,
        "preset": preset,
        "test_accuracy": f"{test_accuracy:.6f}",
        "tta": "true" if tta_level else "false",
        "tta_level": str(tta_level),
        "versions": json.dumps(versions, sort_keys=True),
    }


MAX_CLASS_NAMES_BYTES = 256 * 1024  # 1000 names of 64 characters, JSON-escaped, fit easily


class ContractError(ValueError):
    """The model file does not follow the contract."""


def check_session(session) -> list[str]:
    """Validate an onnxruntime.InferenceSession against the contract; returns the class names."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    meta = session.get_modelmeta().custom_metadata_map
    problems = []
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
        problems.append(f"expected one input named {INPUT_NAME!r}, found {[i.name for i in inputs]}")
    elif inputs[0].type != "tensor(uint8)":
        problems.append(f"input {INPUT_NAME!r} must be tensor(uint8), is {inputs[0].type}")
    elif list(inputs[0].shape[1:]) != [IMAGE_HEIGHT, IMAGE_WIDTH, CHANNELS]:
        problems.append(f"input shape must be [N, 32, 32, 3], is {inputs[0].shape}")
    output = next((o for o in outputs if o.name == OUTPUT_NAME), None)
    if output is None:
        problems.append(f"no output named {OUTPUT_NAME!r}")
    elif output.type != "tensor(float)" or len(output.shape) != 2:
        problems.append(f"output {OUTPUT_NAME!r} must be float32 [N, C], is {output.type} {output.shape}")
    elif not isinstance(output.shape[1], int):  # C names the columns: a symbolic width cannot be checked
        problems.append(f"output {OUTPUT_NAME!r} must have a fixed number of columns C, is {output.shape}")
    width = output.shape[1] if output is not None and len(output.shape) == 2 else None
    what = "metadata_props 'class_names'"
    try:
        if "class_names" not in meta:
            raise ContractError(f"{what}: missing")
        class_names = load_json(meta["class_names"], what, error=ContractError, max_bytes=MAX_CLASS_NAMES_BYTES)
        # the class-name gate (job.gates.class_names): printable one-line unique names, one per output column
        class_names = check_class_names(
            class_names, what, count=width if isinstance(width, int) else None, error=ContractError
        )
    except ContractError as exc:
        problems.append(str(exc))
        class_names = []
    if problems:
        raise ContractError("; ".join(problems))
    return class_names

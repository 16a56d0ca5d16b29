"""ONNX export of the inference function with tf2onnx, with contract metadata and a full checker pass."""

import logging
from pathlib import Path

from job.contract import INPUT_NAME, OPSET
from job.export.onnx_graph import optimize

log = logging.getLogger(__name__)


class OnnxExportError(RuntimeError):
    pass


def export_onnx(serve_fn, path: Path, metadata: dict[str, str]) -> None:
    import onnx
    import tf2onnx

    tf2onnx_logger = logging.getLogger("tf2onnx")
    previous = tf2onnx_logger.level
    tf2onnx_logger.setLevel(logging.ERROR)
    try:
        model_proto, _ = tf2onnx.convert.from_function(serve_fn, input_signature=serve_fn.input_signature, opset=OPSET)
    finally:
        tf2onnx_logger.setLevel(previous)
    # GELU in the form ONNX Runtime fuses, BatchNorm after a max-pool folded into the conv: same function
    # (the parity gate checks it), opset-17 standard ops only.
    rewrites = optimize(model_proto)
    log.debug("ONNX graph rewrites: %s", rewrites)
    model_proto.producer_name = "cifar10-job (tf2onnx)"
    del model_proto.metadata_props[:]
    for key, value in metadata.items():
        entry = model_proto.metadata_props.add()
        entry.key, entry.value = key, value
    inputs = [i.name for i in model_proto.graph.input if i.name not in {t.name for t in model_proto.graph.initializer}]
    if inputs != [INPUT_NAME]:
        raise OnnxExportError(
            f"the converted graph has inputs {inputs}, expected only {INPUT_NAME!r} "
            "(model state was captured as an input instead of a constant)"
        )
    try:
        # tf2onnx writes a file even for unsupported ops: the full check (with shape inference) catches them.
        onnx.checker.check_model(model_proto, full_check=True)
    except Exception as exc:
        raise OnnxExportError(f"the converted ONNX model fails onnx.checker ({exc})") from None
    onnx.save(model_proto, str(path))

"""INT8 ONNX by ONNX Runtime static quantization (QDQ format), calibrated on training images only."""

import logging
import tempfile
from pathlib import Path

import numpy as np

from job.contract import INPUT_NAME
from job.runtime.resources import VNNI
from job.storage.layout import MODEL_INT8, MODEL_INT8_VNNI

log = logging.getLogger(__name__)


class _Calibration:
    """onnxruntime.quantization.CalibrationDataReader over uint8 training images."""

    def __init__(self, images: np.ndarray, batch_size: int = 64):
        self.batches = iter([images[i : i + batch_size] for i in range(0, len(images), batch_size)])

    def get_next(self):
        batch = next(self.batches, None)
        return None if batch is None else {INPUT_NAME: batch}


def calibration_images(train_images: np.ndarray, seed: int, count: int = 1024) -> np.ndarray:
    """A seeded random sample of training images (never the test split) for activation ranges."""
    rng = np.random.default_rng(seed)
    return train_images[rng.choice(len(train_images), min(count, len(train_images)), replace=False)]


# Two INT8 files can be published. The portable one runs correctly on every x86 CPU; the VNNI one, with full
# 8-bit weights, is faster where the CPU multiplies u8 x s8 with VNNI (VPDPBUSD: 32-bit sums, no saturation) and
# silently wrong elsewhere, so it names the CPU feature it needs and the predictor refuses it without it.
# Measured on 2 cores of an AVX-512 + VNNI EPYC with ONNX Runtime 1.32 (`fast` model, 2 epochs, flip TTA; four
# runs of bench/int8.py): float 360-400 / 433-446 / 434-441 images/s at batch 1 / 64 / 256; portable 2.45-3.01x /
# 2.62-3.11x / 2.73-3.06x; VNNI 2.38-3.01x / 2.63-3.10x / 2.69-3.08x: no gain over the portable model there, so
# the VNNI file is opt-in (--int8-vnni). Accuracy on the 5,000-image holdout: float 81.94%, portable 81.76%,
# VNNI 81.72%.
VARIANTS = {
    "portable": {"file": MODEL_INT8, "reduce_range": True, "requires": ""},
    "vnni": {"file": MODEL_INT8_VNNI, "reduce_range": False, "requires": VNNI},
}


# Which nodes get quantize/dequantize pairs. On a graph with GELU (the `fast` presets), only the convolutions, the
# matrix products, the pools and the activations as single FastGelu nodes (job.export.onnx_graph.fast_gelu): a
# MinMax range on every Pow/Mul/Add/Sigmoid inside a GELU built from elementwise nodes cost 14-18 points of accuracy,
# and the float GELU subgraph between Q/DQ pairs made the file slower than float. Graphs without GELU (ReLU
# models, `seed`) keep ONNX Runtime's default, every op it can quantize: measured as before.
GELU_OP_TYPES = ["Conv", "MatMul", "Gemm", "MaxPool", "FastGelu"]


def quantize_int8(
    float_model: Path,
    int8_model: Path,
    calibration_images: np.ndarray,
    variant: str = "portable",
    calibrate_method: str = "MinMax",
) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from job.export.onnx_graph import fast_gelu, tanh_form

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # Symbolic shape inference fails on tf2onnx graphs; ONNX shape inference + graph optimisation suffice.
        quant_pre_process(str(float_model), str(prepared), skip_symbolic_shape=True)
        graph = onnx.load(str(prepared))
        tanh_form(graph)  # a model.onnx exported before the rewrite existed
        gelus = fast_gelu(graph)
        if gelus:
            onnx.save(graph, str(prepared))
        # reduce_range: 7-bit weights. On x86 CPUs without VNNI (AVX2, and AVX-512 before Cascade Lake) ONNX
        # Runtime multiplies u8 activations by s8 weights with VPMADDUBSW, whose int16 pair sums saturate with
        # full 8-bit weights: measured on an AVX2 EPYC, a full-range model agreed with the float one on 23% of
        # images, a 7-bit one on 95%. The file is portable, and its consumers' CPUs are unknown.
        quantize_static(
            str(prepared),
            str(int8_model),
            _Calibration(calibration_images),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=GELU_OP_TYPES if gelus else None,
            per_channel=True,
            reduce_range=VARIANTS[variant]["reduce_range"],
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=getattr(CalibrationMethod, calibrate_method),
        )
    # The quantized graph is written by ONNX Runtime's tools: carry the contract's metadata_props over.
    source, target = onnx.load(str(float_model)), onnx.load(str(int8_model))
    del target.metadata_props[:]
    for prop in source.metadata_props:
        target.metadata_props.add(key=prop.key, value=prop.value)
    bits = "7-bit weights (reduce_range)" if VARIANTS[variant]["reduce_range"] else "8-bit weights"
    ops = f"; {gelus} GELUs as com.microsoft FastGelu, quantized: {', '.join(GELU_OP_TYPES)}" if gelus else ""
    target.metadata_props.add(
        key="quantization", value=f"int8 static QDQ, per-channel {bits}, {calibrate_method} calibration{ops}"
    )
    if VARIANTS[variant]["requires"]:
        target.metadata_props.add(key="requires_cpu_feature", value=VARIANTS[variant]["requires"])
    onnx.checker.check_model(target, full_check=True)
    onnx.save(target, str(int8_model))

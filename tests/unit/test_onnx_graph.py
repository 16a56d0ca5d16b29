"""The ONNX graph rewrites (job/export/onnx_graph/) on a small graph shaped like tf2onnx's fast_net block:
Conv -> MaxPool -> BatchNorm as Mul/Add -> GELU as x * sigmoid(c x + c 0.044715 x^3). Same function after each
rewrite, and ONNX Runtime fuses the tanh form into one FastGelu."""

import math

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

C = 2 * math.sqrt(2 / math.pi)


def _block(scale_sign: float = 1.0):
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32), "W"),
        numpy_helper.from_array((scale_sign * rng.uniform(0.5, 2, (1, 4, 1, 1))).astype(np.float32), "s"),
        numpy_helper.from_array(rng.normal(0, 0.5, (1, 4, 1, 1)).astype(np.float32), "b"),
        numpy_helper.from_array(np.array(C, np.float32), "k1"),
        numpy_helper.from_array(np.array(C * 0.044715, np.float32), "k3"),
    ]
    nodes = [
        helper.make_node("Conv", ["X", "W"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("MaxPool", ["conv"], ["pool"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Mul", ["pool", "s"], ["bn_mul"]),
        helper.make_node("Add", ["bn_mul", "b"], ["x"]),
        # the GELU as tf2onnx writes fast_net's stock-layer GELU
        helper.make_node("Mul", ["x", "k1"], ["lin"]),
        helper.make_node("Mul", ["k3", "x"], ["k3x"]),
        helper.make_node("Mul", ["x", "x"], ["xx"]),
        helper.make_node("Mul", ["xx", "k3x"], ["cubic"]),
        helper.make_node("Add", ["lin", "cubic"], ["inner"]),
        helper.make_node("Sigmoid", ["inner"], ["sig"]),
        helper.make_node("Mul", ["x", "sig"], ["g"]),
        helper.make_node("Add", ["g", "g"], ["Y"]),  # ONNX Runtime fuses no subgraph whose result is a graph output
    ]
    graph = helper.make_graph(
        nodes,
        "block",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 4, 4, 4])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model, x):
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"X": x})[0]


@pytest.fixture
def x():
    return np.random.default_rng(1).normal(0, 2, (3, 3, 8, 8)).astype(np.float32)


def test_optimize_keeps_the_function_with_standard_ops_only(x):
    import onnx

    from job.export.onnx_graph import optimize

    model = _block()
    before = _run(model, x)
    assert optimize(model) == {"gelu_tanh_form": 1, "pooled_batchnorm_folded": 1}
    onnx.checker.check_model(model, full_check=True)
    ops = [n.op_type for n in model.graph.node]
    assert "Sigmoid" not in ops and ops.count("Tanh") == 1 and ops[:2] == ["Conv", "MaxPool"]
    assert {n.domain for n in model.graph.node} == {""}
    np.testing.assert_allclose(_run(model, x), before, rtol=1e-5, atol=1e-5)


def test_onnx_runtime_fuses_the_tanh_form(tmp_path, x):
    import onnx
    import onnxruntime as ort

    from job.export.onnx_graph import optimize

    model = _block()
    optimize(model)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(tmp_path / "optimized.onnx").graph.node]
    assert ops.count("FastGelu") == 1 and "Tanh" not in ops


def test_fast_gelu_replaces_the_subgraph_by_one_node(x):
    from job.export.onnx_graph import MS_DOMAIN, fast_gelu, optimize

    model = _block()
    before = _run(model, x)
    optimize(model)
    assert fast_gelu(model) == 1
    gelus = [n for n in model.graph.node if n.op_type == "FastGelu"]
    assert len(gelus) == 1 and gelus[0].domain == MS_DOMAIN and len(model.graph.node) == 4
    np.testing.assert_allclose(_run(model, x), before, rtol=1e-4, atol=1e-5)


def test_a_negative_batchnorm_scale_is_not_folded(x):
    from job.export.onnx_graph import fold_pooled_batchnorm

    model = _block(scale_sign=-1.0)
    before = _run(model, x)
    assert fold_pooled_batchnorm(model) == 0  # max-pool does not commute with a negative scale
    np.testing.assert_allclose(_run(model, x), before)


def test_a_graph_without_gelu_is_left_alone():
    from job.export.onnx_graph import optimize

    model = _block()
    del model.graph.node[4:]
    model.graph.output[0].name = "x"
    assert optimize(model) == {"gelu_tanh_form": 0, "pooled_batchnorm_folded": 0}

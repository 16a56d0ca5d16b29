"""The VNNI INT8 variant names the CPU feature it needs; the predictor refuses it on a CPU without it and picks
the variant by the CPU it runs on. (A model file with the contract is made here with onnx's helpers.)"""

import json

import pytest
from onnx import TensorProto, helper

from job.errors import ModelError
from job.runtime import resources


def contract_model(path, **extra_meta):
    x = helper.make_tensor_value_info("image", TensorProto.UINT8, [None, 32, 32, 3])
    y = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2])
    nodes = [
        helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["f"], ["m"], axes=[1, 2], keepdims=0),
        helper.make_node("Slice", ["m", "s", "e", "a"], ["two"]),
        helper.make_node("Softmax", ["two"], ["probabilities"]),
    ]
    inits = [helper.make_tensor(n, TensorProto.INT64, [1], [v]) for n, v in (("s", 0), ("e", 2), ("a", 1))]
    model = helper.make_model(
        helper.make_graph(nodes, "g", [x], [y], inits), opset_imports=[helper.make_opsetid("", 13)]
    )
    for key, value in {"class_names": json.dumps(["a", "b"]), **extra_meta}.items():
        model.metadata_props.add(key=key, value=value)
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize("flags,ok", [({"avx512_vnni"}, True), ({"avx_vnni"}, True), ({"avx2", "avx512f"}, False)])
def test_a_vnni_model_loads_only_where_the_cpu_has_vnni(tmp_path, monkeypatch, flags, ok):
    from job import predict

    monkeypatch.setattr(resources, "cpu_flags", lambda: flags)
    path = contract_model(tmp_path / "model.int8-vnni.onnx", requires_cpu_feature="avx512_vnni|avx_vnni")
    if ok:
        assert predict.load_session(path)[1] == ["a", "b"]
    else:
        with pytest.raises(ModelError, match="needs a CPU with avx512_vnni or avx_vnni"):
            predict.load_session(path)
    assert predict.load_session(contract_model(tmp_path / "model.onnx"))[1] == ["a", "b"]  # float: any CPU


@pytest.mark.parametrize("flags,chosen", [({"avx512_vnni"}, "model.int8-vnni.onnx"), ({"avx2"}, "model.int8.onnx")])
def test_int8_picks_the_variant_for_this_cpu(tmp_path, monkeypatch, flags, chosen):
    from job import predict

    monkeypatch.setattr(resources, "cpu_flags", lambda: flags)
    for name in ("model.onnx", "model.int8.onnx", "model.int8-vnni.onnx"):
        contract_model(tmp_path / name)
    assert predict.resolve_model(str(tmp_path), tmp_path, int8=True).name == chosen
    assert predict.resolve_model(str(tmp_path), tmp_path).name == "model.onnx"

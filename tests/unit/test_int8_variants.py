"""The VNNI INT8 variant names the CPU feature it needs; the predictor refuses it on a CPU without it and picks
the variant by the CPU it runs on. (A model file with the contract is made here with onnx's helpers.)"""

import pytest

from helpers import contract_model
from job.errors import ModelError
from job.runtime import resources


@pytest.mark.parametrize("flags,ok", [({"avx512_vnni"}, True), ({"avx_vnni"}, True), ({"avx2", "avx512f"}, False)])
def test_a_vnni_model_loads_only_where_the_cpu_has_vnni(tmp_path, monkeypatch, flags, ok):
    from job import predict

    monkeypatch.setattr(resources, "cpu_flags", lambda: flags)
    path = contract_model(tmp_path / "model.int8-vnni.onnx", requires_cpu_feature="avx512_vnni|avx_vnni")
    if ok:
        assert predict.load_session(path)[1] == ["c0", "c1"]
    else:
        with pytest.raises(ModelError, match="needs a CPU with avx512_vnni or avx_vnni"):
            predict.load_session(path)
    assert predict.load_session(contract_model(tmp_path / "model.onnx"))[1] == ["c0", "c1"]  # float: any CPU


@pytest.mark.parametrize("flags,chosen", [({"avx512_vnni"}, "model.int8-vnni.onnx"), ({"avx2"}, "model.int8.onnx")])
def test_int8_picks_the_variant_for_this_cpu(tmp_path, monkeypatch, flags, chosen):
    from job import predict

    monkeypatch.setattr(resources, "cpu_flags", lambda: flags)
    from job.storage.manifest import write_manifest

    run = tmp_path / "run"
    run.mkdir()
    for name in ("model.onnx", "model.int8.onnx", "model.int8-vnni.onnx"):
        contract_model(run / name)
    write_manifest(run, "run")
    for int8, expected in ((True, chosen), (False, "model.onnx")):
        downloads = tmp_path / f"downloads-{int8}"
        downloads.mkdir()
        assert predict.resolve_model(str(run), downloads, int8=int8).name == expected

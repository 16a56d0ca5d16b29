"""The verification gate and the INT8 gate, in process, on a tiny trained model: a faithful export passes,
a perturbed or truncated ONNX file fails, and a failed gate publishes nothing."""

import numpy as np
import pytest


@pytest.fixture(scope="module")
def tiny_state(tiny_tar, tmp_path_factory):
    """Config + splits + a trained model, in this process."""
    from job import config, data
    from job.train.build import seed_everything
    from job.train.loop import train

    cache = tmp_path_factory.mktemp("cache")
    cfg = config.resolve({"data": str(tiny_tar), "epochs": 1, "cache_dir": str(cache)}, env={})
    splits = data.split(data.load(cfg.data, cache), val_fraction=0.1, test_fraction=0.1, seed=cfg.seed)
    seed_everything(cfg.seed, True)
    return cfg, splits, train(cfg.training, splits).model


def _export(tmp_path, cfg, splits, model, tta_level=0):
    from job.export.bundle import export_model
    from job.export.inference import inference_function, predict

    serve = inference_function(model, tta_level)
    export_model(
        model,
        serve,
        tmp_path,
        class_names=splits.class_names,
        run_id="t",
        preset="seed",
        test_accuracy=0.5,
        tta_level=tta_level,
        versions={},
    )
    return serve, predict(serve, splits.x_test)


def _gate_settings(cfg) -> dict:
    return {"seed": cfg.seed, "threads": cfg.threads, "tolerance": cfg.parity_tolerance}


def test_gate_passes_for_a_faithful_export(tiny_state, tmp_path):
    from job.export.gate import verify

    cfg, splits, model = tiny_state
    serve, probs = _export(tmp_path, cfg, splits, model)
    parity = verify(tmp_path, serve, splits.x_test, splits.y_test, probs, **_gate_settings(cfg))
    assert parity.onnxruntime.argmax_agreement == 1.0 and parity.savedmodel.argmax_agreement == 1.0
    assert parity.onnx_test_probs.shape == probs.shape
    assert set(parity.as_dict()) == {"onnxruntime", "savedmodel", "tolerance", "random_batch_sizes"}


def test_gate_fails_on_a_perturbed_onnx_model(tiny_state, tmp_path):
    import onnx
    from onnx import numpy_helper

    from job.errors import ParityError
    from job.export.gate import verify

    cfg, splits, model = tiny_state
    serve, probs = _export(tmp_path, cfg, splits, model)
    proto = onnx.load(tmp_path / "model.onnx")
    biggest = max(proto.graph.initializer, key=lambda t: np.prod(t.dims))
    weights = numpy_helper.to_array(biggest)
    biggest.CopyFrom(numpy_helper.from_array((weights * -1.5).astype(weights.dtype), biggest.name))
    onnx.save(proto, tmp_path / "model.onnx")
    with pytest.raises(ParityError, match="onnxruntime disagrees"):
        verify(tmp_path, serve, splits.x_test, splits.y_test, probs, **_gate_settings(cfg))


def test_gate_fails_on_a_corrupted_onnx_file(tiny_state, tmp_path):
    from job.errors import ParityError
    from job.export.gate import verify

    cfg, splits, model = tiny_state
    serve, probs = _export(tmp_path, cfg, splits, model)
    raw = (tmp_path / "model.onnx").read_bytes()
    (tmp_path / "model.onnx").write_bytes(raw[: len(raw) // 3])
    with pytest.raises(ParityError, match="cannot load"):
        verify(tmp_path, serve, splits.x_test, splits.y_test, probs, **_gate_settings(cfg))


def test_failed_gate_publishes_nothing(tiny_state, tmp_path, monkeypatch):
    """The whole pipeline with an export that writes a wrong model: exit code 5 path, empty store."""
    import onnx
    from onnx import numpy_helper

    from job import pipeline
    from job.errors import ParityError
    from job.export import bundle
    from job.runtime.platform import Platform

    cfg, splits, _ = tiny_state
    real = bundle.export_onnx

    def export_then_damage(serve_fn, path, metadata):
        real(serve_fn, path, metadata)
        proto = onnx.load(path)
        t = max(proto.graph.initializer, key=lambda t: np.prod(t.dims))
        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * 0.0, t.name))
        onnx.save(proto, path)

    monkeypatch.setattr(bundle, "export_onnx", export_then_damage)
    cfg.out, cfg.run_id = str(tmp_path / "store"), "damaged"
    with pytest.raises(ParityError) as err:
        pipeline.run(cfg, Platform())
    assert err.value.exit_code == 5
    assert list((tmp_path / "store").iterdir()) == []


def test_int8_beyond_the_accuracy_bound_is_not_published(tiny_state, tmp_path):
    from job.export.gate import quantize

    cfg, splits, model = tiny_state
    _, probs = _export(tmp_path, cfg, splits, model)
    perfect = np.eye(probs.shape[1], dtype=np.float32)[splits.y_test]  # a float model that is always right
    report = quantize(
        tmp_path, splits.x_train, splits.x_test, splits.y_test, perfect, seed=cfg.seed, threads=0, max_drop=0.0
    )
    assert report["accuracy_drop"] > 0  # the tiny model is far from perfect
    assert not report["published"] and "exceeds" in report["reason"]
    assert not (tmp_path / "model.int8.onnx").exists()


def test_mirror_and_translate_tta_exports_and_passes_the_gate(tiny_state, tmp_path):
    """airbench94's second TTA level inside the exported graph (reflect padding, shifted crops): ONNX Runtime and
    the SavedModel still predict what Keras predicts."""
    from job.export.gate import verify
    from job.export.inference import inference_function, predict

    cfg, splits, model = tiny_state
    serve, probs = _export(tmp_path, cfg, splits, model, tta_level=2)
    parity = verify(tmp_path, serve, splits.x_test, splits.y_test, probs, **_gate_settings(cfg))
    assert parity.onnxruntime.argmax_mismatches == 0 and parity.onnxruntime.max_abs_diff <= 1e-4
    plain = predict(inference_function(model, 1), splits.x_test)
    assert np.abs(plain - probs).max() > 0  # the translations change the average

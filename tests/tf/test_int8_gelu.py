"""INT8 of a trained GELU fast_net: the job's quantization stays within the gate's one point of the float model
where the quantization the job used before (every op of the GELU subgraph quantized with MinMax ranges) does not.

The model is trained with the `fast` recipe (width 16, 6 epochs: not a one-epoch toy) on synthetic images, each
class a small +-1 pattern at a random place in noise: after a few epochs the GELU inputs get the heavy tails that
break per-node MinMax ranges, as the real `fast` model's do (docs/performance.md). About a minute on 2 cores.
"""

import numpy as np
import pytest

N_TRAIN, N_TEST = 2000, 1000


def _images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    patterns = np.random.default_rng(123).choice([-1.0, 1.0], (10, 4, 4, 3))
    y = rng.integers(0, 10, n)
    x = 0.5 + rng.normal(0, 0.25, (n, 32, 32, 3))
    for i in range(n):
        r, c = rng.integers(0, 28, 2)
        x[i, r : r + 4, c : c + 4] += 0.3 * patterns[y[i]]
    return (np.clip(x, 0, 1) * 255).astype(np.uint8), y


@pytest.fixture(scope="module")
def gelu_run(tmp_path_factory):
    import onnx
    import tf2onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from job import config, contract, stages
    from job.data.dataset import Splits
    from job.export.inference import inference_function, predict
    from job.export.onnx_export import export_onnx
    from job.export.quantize import _Calibration, calibration_images
    from job.train.build import seed_everything

    x, y = _images(N_TRAIN + N_TEST, 0)
    splits = Splits(
        x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:][:100], y[N_TRAIN:][:100], x[N_TRAIN:], y[N_TRAIN:], list("abcdefghij")
    )
    cfg = config.resolve(
        {"preset": "fast", "width": 16, "epochs": 6, "batch_size": 128, "precision": "float32", "tta_level": 0},
        env={},
    )
    assert cfg.activation == "gelu"
    seed_everything(cfg.seed, True)
    model = stages.train(cfg.training, splits).net  # the float32 stock-layer copy the job exports
    folder = tmp_path_factory.mktemp("gelu")
    serve = inference_function(model, 0)
    meta = contract.metadata(splits.class_names, run_id="t", preset="fast", test_accuracy=0, tta_level=0, versions={})
    export_onnx(serve, folder / "model.onnx", meta)
    calibration = calibration_images(splits.x_train, cfg.seed)
    # the quantization of before: the graph as tf2onnx writes it, every op quantized, MinMax ranges
    proto, _ = tf2onnx.convert.from_function(serve, input_signature=serve.input_signature, opset=contract.OPSET)
    onnx.save(proto, folder / "legacy.onnx")
    quant_pre_process(str(folder / "legacy.onnx"), str(folder / "legacy.pre.onnx"), skip_symbolic_shape=True)
    quantize_static(
        str(folder / "legacy.pre.onnx"),
        str(folder / "legacy.int8.onnx"),
        _Calibration(calibration),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        reduce_range=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )
    return folder, splits, cfg, predict(serve, splits.x_test)


def _accuracy(path, splits) -> tuple[float, np.ndarray]:
    from job.export.parity import run_onnx
    from job.runtime.ort import ort_session

    probs = run_onnx(ort_session(path), splits.x_test)
    return float(np.mean(probs.argmax(1) == splits.y_test)), probs


def test_gelu_int8_stays_within_the_gate_where_the_old_quantization_failed(gelu_run):
    from job.export.gate import quantize

    folder, splits, cfg, keras_probs = gelu_run
    float_accuracy, float_probs = _accuracy(folder / "model.onnx", splits)
    assert float_accuracy > 0.8, "the model must have learned the task for the bound to mean anything"
    # the exported graph (GELU in tanh form, BatchNorm folded) still computes what Keras computes
    assert np.abs(float_probs - keras_probs).max() < 1e-4
    legacy_accuracy, _ = _accuracy(folder / "legacy.int8.onnx", splits)
    assert float_accuracy - legacy_accuracy > 0.01, "the old quantization must fail here, or this test proves nothing"

    report = quantize(
        folder, splits.x_train, splits.x_test, splits.y_test, float_probs, seed=cfg.seed, threads=0, max_drop=0.01
    )
    assert report["published"], report
    assert report["accuracy_drop"] <= 0.01
    assert (folder / "model.int8.onnx").is_file()


def test_gelu_int8_file_runs_gelu_as_one_node(gelu_run):
    import onnx

    from job.export.quantize import quantize_int8

    folder, splits, cfg, _ = gelu_run
    quantize_int8(folder / "model.onnx", folder / "check.int8.onnx", splits.x_train[:256])
    model = onnx.load(folder / "check.int8.onnx")
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("FastGelu") == 7 and "Tanh" not in ops and "Pow" not in ops  # whitening layer + 6 convs
    assert "FastGelu" in {p.key: p.value for p in model.metadata_props}["quantization"]
    float_ops = {n.op_type for n in onnx.load(folder / "model.onnx").graph.node}
    assert "FastGelu" not in float_ops and {"Tanh", "Pow"} <= float_ops  # model.onnx: opset-17 standard ops only
    assert {o.domain for o in onnx.load(folder / "model.onnx").opset_import} <= {"", "ai.onnx", "ai.onnx.ml"}

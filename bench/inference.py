"""The inference figures of `make bench`: images/s at batch 1, 64 and 256 for Keras `predict`, the SavedModel, ONNX
Runtime float and INT8, each with its accuracy on the test split, from a folder bench.train_curve exported."""

import functools
import time
from pathlib import Path


def time_inference(folder: Path, quick: bool) -> dict:
    """images/s at batch 1, 64, 256 for Keras predict, the SavedModel, ONNX Runtime float and INT8."""
    import keras
    import numpy as np
    import tensorflow as tf

    from job.export.inference import inference_function, predict
    from job.export.parity import run_onnx
    from job.export.savedmodel import load_savedmodel
    from job.runtime.ort import ort_session

    x_test, y_test = np.load(folder / "x_test.npy"), np.load(folder / "y_test.npy")
    model = keras.models.load_model(folder / "model.keras")
    meta = ort_session(folder / "model.onnx").get_modelmeta().custom_metadata_map
    level = int(meta.get("tta_level", "1" if meta.get("tta") == "true" else "0"))
    saved = load_savedmodel(folder / "saved_model")
    sessions = {
        "onnxruntime_fp32": ort_session(folder / "model.onnx"),
        "onnxruntime_int8": ort_session(folder / "model.int8.onnx"),
    }
    if (folder / "model.int8-vnni.onnx").is_file():
        sessions["onnxruntime_int8_vnni"] = ort_session(folder / "model.int8-vnni.onnx")
    keras_serve = inference_function(model, level)  # the Keras model with the same TTA as the export

    def keras_predict(x):
        return predict(keras_serve, x)

    runners = {
        "keras_predict": keras_predict,
        "savedmodel": lambda x: saved(tf.constant(x))["probabilities"].numpy(),
        **{name: functools.partial(run_onnx, session) for name, session in sessions.items()},
    }
    out: dict = {"accuracy": {}, "images_per_second": {}}
    for name, fn in runners.items():
        probs = np.concatenate([fn(x_test[i : i + 256]) for i in range(0, len(x_test), 256)])
        out["accuracy"][name] = float(np.mean(probs.argmax(1) == y_test))
        out["images_per_second"][name] = {}
        for batch in (1, 64, 256):
            x = x_test[:batch]
            fn(x)  # warm-up
            n_images = (200 if quick else 1000) if batch == 1 else (2000 if quick else 10000)
            reps = max(3, n_images // batch)
            t0 = time.perf_counter()
            for _ in range(reps):
                fn(x)
            out["images_per_second"][name][str(batch)] = round(reps * batch / (time.perf_counter() - t0), 1)
    base = out["images_per_second"]["keras_predict"]
    out["ratio_to_keras_predict"] = {
        name: {b: round(v / base[b], 2) for b, v in per.items()} for name, per in out["images_per_second"].items()
    }
    fp32, int8 = out["accuracy"]["onnxruntime_fp32"], out["accuracy"]["onnxruntime_int8"]
    out["int8_accuracy_drop"] = round(fp32 - int8, 4)
    out["int8_speedup"] = {
        b: round(out["images_per_second"]["onnxruntime_int8"][b] / out["images_per_second"]["onnxruntime_fp32"][b], 2)
        for b in ("1", "64", "256")
    }
    return out

"""The predictions SageMaker and Vertex AI answers carry: per image, the top class and every probability in
the model's class order (the order of its class_names metadata, as `job predict --json` prints them)."""

import json
import math
from functools import lru_cache

import numpy as np

from job.gates.text import json_text


def predictions(probs: np.ndarray, class_names: list[str]) -> list[dict]:
    rows = probs.tolist()  # float32 -> the same values as Python floats: JSON carries them exactly
    top = probs.argmax(axis=1).tolist()
    return [{"label": class_names[t], "probabilities": row} for t, row in zip(top, rows, strict=True)]


@lru_cache(maxsize=8)
def _label_heads(class_names: tuple[str, ...]) -> tuple[bytes, ...]:
    return tuple(b'{"label":' + json.dumps(name).encode() + b',"probabilities":[' for name in class_names)


def predictions_json(probs: np.ndarray, class_names: list[str]) -> bytes:
    """`{"predictions": predictions(probs, class_names)}` as compact JSON, byte for byte what json.dumps writes
    (a float is written as its repr there too), with each label's bytes made once per model, not per answer."""
    rows = probs.tolist()
    if not all(math.isfinite(p) for row in rows for p in row):  # strict JSON: a NaN/Infinity probability is null
        return json_text({"predictions": predictions(probs, class_names)}, separators=(",", ":")).encode()
    heads = _label_heads(tuple(class_names))
    top = probs.argmax(axis=1).tolist()
    items = [heads[t] + ",".join(map(repr, row)).encode() + b"]}" for t, row in zip(top, rows, strict=True)]
    return b'{"predictions":[' + b",".join(items) + b"]}"

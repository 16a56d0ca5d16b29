"""The predictions SageMaker and Vertex AI answers carry: per image, the top class and every probability in
the model's class order (the order of its class_names metadata, as `job predict --json` prints them)."""

import numpy as np


def predictions(probs: np.ndarray, class_names: list[str]) -> list[dict]:
    rows = probs.tolist()  # float32 -> the same values as Python floats: JSON carries them exactly
    top = probs.argmax(axis=1).tolist()
    return [{"label": class_names[t], "probabilities": row} for t, row in zip(top, rows, strict=True)]

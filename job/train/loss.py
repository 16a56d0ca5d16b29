"""The loss the job reports: mean cross-entropy of predicted probabilities against integer labels. Numpy only:
the multi-worker trainer's validation loss and the report's test loss are this one function."""

import numpy as np


def cross_entropy(probs: np.ndarray, labels: np.ndarray) -> float:
    picked = probs[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(picked, 1e-7, 1.0))))

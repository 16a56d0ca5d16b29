"""Test metrics from predicted probabilities: loss, accuracy, the scikit-learn report, the confusion matrix."""

import numpy as np


def cross_entropy(probs: np.ndarray, labels: np.ndarray) -> float:
    picked = probs[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(picked, 1e-7, 1.0))))


def evaluate(probs: np.ndarray, labels: np.ndarray, class_names: list[str]) -> dict:
    """Metrics of predicted probabilities against integer labels."""
    from sklearn.metrics import classification_report, confusion_matrix

    preds = probs.argmax(axis=1)
    ids = list(range(len(class_names)))
    report = classification_report(
        labels, preds, labels=ids, target_names=class_names, digits=4, zero_division=0, output_dict=True
    )
    text = classification_report(labels, preds, labels=ids, target_names=class_names, digits=4, zero_division=0)
    matrix = confusion_matrix(labels, preds, labels=ids)
    return {
        "test_loss": cross_entropy(probs, labels),
        "test_accuracy": float(np.mean(preds == labels)),
        "test_size": len(labels),
        "classification_report": report,
        "classification_report_text": text,
        "confusion_matrix": matrix.tolist(),
    }

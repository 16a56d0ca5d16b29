"""Test metrics from predicted probabilities: loss, accuracy, the scikit-learn report, the confusion matrix."""

from dataclasses import dataclass

import numpy as np

from job.train.loss import cross_entropy


@dataclass(frozen=True)
class HoldoutMetrics:
    loss: float
    accuracy: float
    size: int
    report: dict  # scikit-learn's classification_report, as a dict
    report_text: str  # ... and as text (classification_report.txt)
    confusion_matrix: list[list[int]]

    def as_dict(self) -> dict:
        """metrics.json's fields."""
        return {
            "test_loss": self.loss,
            "test_accuracy": self.accuracy,
            "test_size": self.size,
            "classification_report": self.report,
            "confusion_matrix": self.confusion_matrix,
        }


def evaluate(probs: np.ndarray, labels: np.ndarray, class_names: list[str]) -> HoldoutMetrics:
    """Metrics of predicted probabilities against integer labels."""
    from sklearn.metrics import classification_report, confusion_matrix

    preds = probs.argmax(axis=1)
    ids = list(range(len(class_names)))
    options = dict(labels=ids, target_names=class_names, digits=4, zero_division=0)
    return HoldoutMetrics(
        loss=cross_entropy(probs, labels),
        accuracy=float(np.mean(preds == labels)),
        size=len(labels),
        report=classification_report(labels, preds, output_dict=True, **options),
        report_text=classification_report(labels, preds, **options),
        confusion_matrix=confusion_matrix(labels, preds, labels=ids).tolist(),
    )

"""The run's pictures: training curves, the confusion matrix and the misclassified test images (Matplotlib, no display
needed)."""

from pathlib import Path

import numpy as np


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (containers and CI have no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: list[dict], path: Path) -> None:
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    epochs = [row["epoch"] for row in history]
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric, title in ((ax_acc, "accuracy", "Accuracy"), (ax_loss, "loss", "Loss")):
        ax.plot(epochs, [row.get(metric) for row in history], "o-", label="training")
        has_val = any(f"val_{metric}" in row for row in history)  # --val-fraction 0: training curves only
        if has_val:
            ax.plot(epochs, [row.get(f"val_{metric}") for row in history], "o-", label="validation")
        ax.set_title(f"Training {'and validation ' if has_val else ''}{title.lower()}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(title.lower())
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs only
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_confusion_matrix(matrix: list[list[int]], class_names: list[str], path: Path) -> None:
    """scikit-learn's ConfusionMatrixDisplay, normalised per true class (each row sums to 1), so classes of
    different sizes compare; the counts are in metrics.json."""
    from sklearn.metrics import ConfusionMatrixDisplay

    plt = pyplot()
    m = np.asarray(matrix, dtype=float)
    rows = m.sum(axis=1, keepdims=True)
    normalised = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    fig, ax = plt.subplots(figsize=(8, 7))
    ConfusionMatrixDisplay(normalised, display_labels=class_names).plot(
        ax=ax, cmap="Blues", values_format=".2f", xticks_rotation=45, colorbar=True
    )
    ax.set_title("Confusion matrix (test split, each true class sums to 1)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_misclassified(
    images: np.ndarray, labels: np.ndarray, probs: np.ndarray, class_names: list[str], path: Path, count: int = 24
) -> list[dict]:
    """The test images the model got most confidently wrong, each captioned `true -> predicted (probability)`.
    Returns what it shows (for metrics.json)."""
    predicted = probs.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    worst = wrong[np.argsort(-probs[wrong, predicted[wrong]], kind="stable")][:count]
    shown = [
        {
            "index": int(i),
            "true": class_names[labels[i]],
            "predicted": class_names[predicted[i]],
            "probability": round(float(probs[i, predicted[i]]), 4),
        }
        for i in worst
    ]
    plt = pyplot()
    cols = 6
    rows = max(1, -(-len(worst) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.9, rows * 2.2), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i, item in zip(axes.ravel(), worst, shown, strict=False):
        ax.imshow(images[i], interpolation="nearest")
        ax.set_title(f"{item['true']} →\n{item['predicted']} ({item['probability']:.2f})", fontsize=8)
    if not shown:
        axes[0, 0].text(0, 0.5, "no misclassified test image", fontsize=12)
    fig.suptitle("Most confident mistakes on the test split (true → predicted)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return shown

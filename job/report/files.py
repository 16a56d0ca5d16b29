"""The report stage: history.csv, curves.png, confusion_matrix.png, misclassified.png, classification_report.txt,
config.json and MODEL_CARD.md into the run folder; returns the content of metrics.json (the pipeline adds the
stage durations and peak memory, which include this stage, and writes it)."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from job.config.parts import RunRecord
from job.data.dataset import Splits
from job.export.parity import Parity
from job.report.history import write_history
from job.report.metrics import HoldoutMetrics
from job.report.model_card import write_model_card
from job.report.plots import plot_confusion_matrix, plot_curves, plot_misclassified
from job.runtime.telemetry import versions
from job.storage import layout


@dataclass(frozen=True)
class RunResults:
    """What a finished run made, stage by stage: everything the report describes besides its settings."""

    platform: str
    splits: Splits
    history: list[dict]
    train_seconds: float
    optimizer_steps: int
    resumed_from: dict | None
    finished_at: str  # training's end: what orders a store's runs
    test: HoldoutMetrics
    test_probs: np.ndarray
    parity: Parity
    int8: dict | None
    baseline: dict | None
    threads: tuple[int, int]


def write_report(run_dir: Path, record: RunRecord, run: RunResults) -> dict:
    """`record`: the run's settings as the report shows them (cfg.record)."""
    splits = run.splits
    write_history(run.history, run_dir / layout.HISTORY)
    plot_curves(run.history, run_dir / layout.CURVES)
    plot_confusion_matrix(run.test.confusion_matrix, splits.class_names, run_dir / layout.CONFUSION_MATRIX)
    misclassified = plot_misclassified(
        splits.x_test, splits.y_test, run.test_probs, splits.class_names, run_dir / layout.MISCLASSIFIED
    )
    (run_dir / layout.CLASSIFICATION_REPORT).write_text(run.test.report_text)
    (run_dir / layout.CONFIG).write_text(record.config_json())
    images = len(splits.y_train) * len(run.history)
    metrics = {
        "run_id": record.run_id,
        "preset": record.preset,
        "platform": run.platform,
        "data": splits.info,
        **run.test.as_dict(),
        **({"baseline": run.baseline} if run.baseline else {}),
        "onnx_test_accuracy": run.parity.onnx_test_accuracy,
        "parity": run.parity.as_dict(),
        "training": {
            "epochs": record.optim.epochs,
            "seconds": round(run.train_seconds, 3),
            "images_per_second": round(images / max(run.train_seconds, 1e-9), 1),
            "optimizer_steps": run.optimizer_steps,
            "precision": record.precision,
            "resumed_from": run.resumed_from,
            "final": run.history[-1] if run.history else {},
        },
        "threads": {"intra_op": run.threads[0], "inter_op": run.threads[1]},
        **({"int8": run.int8} if run.int8 else {}),
        "misclassified": misclassified,
        "versions": versions(),
        "finished_at": run.finished_at,
    }
    write_model_card(run_dir, record, metrics)
    return metrics

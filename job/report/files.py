"""The report stage: history.csv, curves.png, confusion_matrix.png, classification_report.txt, config.json and
MODEL_CARD.md into the run folder; returns the metrics.json content (durations are added by the pipeline)."""

from pathlib import Path

from job.report.history import write_history
from job.report.model_card import write_model_card
from job.report.plots import plot_confusion_matrix, plot_curves, plot_misclassified
from job.runtime.telemetry import versions


def write_report(
    run_dir: Path,
    cfg,
    platform_name: str,
    splits,
    result,
    metrics: dict,
    parity: dict,
    int8: dict | None,
    threads: tuple[int, int],
    optimizer_steps: int,
    test_probs,
) -> dict:
    write_history(result.history, run_dir / "history.csv")
    plot_curves(result.history, run_dir / "curves.png")
    plot_confusion_matrix(metrics["confusion_matrix"], splits.class_names, run_dir / "confusion_matrix.png")
    misclassified = plot_misclassified(
        splits.x_test, splits.y_test, test_probs, splits.class_names, run_dir / "misclassified.png"
    )
    (run_dir / "classification_report.txt").write_text(metrics.pop("classification_report_text"))
    (run_dir / "config.json").write_text(cfg.to_json())
    full = {
        "run_id": cfg.run_id,
        "preset": cfg.preset,
        "platform": platform_name,
        "data": splits.info,
        **metrics,
        "onnx_test_accuracy": parity.pop("onnx_test_accuracy"),
        "parity": parity,
        "training": {
            "epochs": cfg.epochs,
            "seconds": round(result.seconds, 3),
            "images_per_second": round(len(splits.y_train) * len(result.history) / max(result.seconds, 1e-9), 1),
            "optimizer_steps": optimizer_steps,
            "precision": cfg.precision,
            "resumed_from": result.resumed_from,
            "final": result.history[-1] if result.history else {},
        },
        "threads": {"intra_op": threads[0], "inter_op": threads[1]},
        **({"int8": int8} if int8 else {}),
        "misclassified": misclassified,
        "versions": versions(),
    }
    write_model_card(run_dir, cfg, full)
    return full

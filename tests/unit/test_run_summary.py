"""The run's one-line summary (and latest.json's fields), made by one function for `job train` and `job publish`
from metrics.json's content. Importing the pipeline and its stages must not import TensorFlow: this tier makes
it unimportable, so these tests also guard the lazy imports that keep `job publish` and `--help` fast."""

from job.pipeline import summary_of


def _metrics() -> dict:
    return {
        "test_accuracy": 0.9068123456,
        "onnx_test_accuracy": 0.9066,
        "finished_at": "2026-12-01T18:00:00Z",
        "parity": {"onnxruntime": {"max_abs_diff": 2e-6}, "savedmodel": {"max_abs_diff": 3e-6}},
        "durations_s": {"train": 1.0},
        "peak_rss_mb": 1900.5,
        "int8": {"test_accuracy": 0.9, "accuracy_drop": 0.0066, "published": True, "bytes": 1},
    }


def test_summary_from_a_finished_runs_metrics():
    summary = summary_of(_metrics(), "r1", "s3://bucket/runs")
    assert summary["run_id"] == "r1" and summary["store"] == "s3://bucket/runs"
    assert summary["test_accuracy"] == 0.906812 and summary["onnx_test_accuracy"] == 0.9066
    assert summary["parity_max_abs_diff"] == 3e-6
    assert summary["int8"] == {"test_accuracy": 0.9, "accuracy_drop": 0.0066, "published": True}
    assert summary["finished_at"] == "2026-12-01T18:00:00Z" and summary["baseline"] is None


def test_summary_of_a_damaged_metrics_file_is_null_where_it_is_not_a_number():
    damaged = {
        "test_accuracy": "0.99",
        "onnx_test_accuracy": True,
        "finished_at": ["not", "a", "time"],
        "parity": {"onnxruntime": "x", "savedmodel": {"max_abs_diff": "big"}},
        "peak_rss_mb": None,
        "int8": ["x"],
    }
    summary = summary_of(damaged, "r2", "/store")
    assert summary["test_accuracy"] is None and summary["onnx_test_accuracy"] is None
    assert summary["finished_at"] is None and summary["parity_max_abs_diff"] is None
    assert summary["int8"] == {"test_accuracy": None, "accuracy_drop": None, "published": None}
    assert summary_of({}, "r3", "/store")["test_accuracy"] is None

"""The regression gate (`--baseline STORE_OR_RUN`): a run is blessed only when it is not worse than the last good
model by more than `--max-regression`, as TFX's Evaluator blesses a model against its baseline.

The baseline is a run folder or a store (its latest.json), local or s3://; its metrics.json is read through the
runs layout and checked against the baseline's own manifest (a store's bytes are hostile). The comparison is
refused (exit 2) unless both runs were evaluated on the same test images (`data.test_fingerprint`).
"""

from dataclasses import asdict, dataclass

from job.errors import ConfigError, DataError, QualityGateError
from job.storage.layout import METRICS, json_number, read_metrics


@dataclass(frozen=True)
class Baseline:
    uri: str
    run_id: str
    test_accuracy: float
    test_fingerprint: str


def load_baseline(uri: str, s3_options=None, trust=None) -> Baseline:
    """The baseline's identity and test metrics; read before any data is loaded (a wrong path fails at once)."""
    from job.storage import open_store

    store = open_store(uri, s3_options)
    run = store.here_or_latest()
    if run is None:
        raise DataError(f"--baseline {uri}: neither a run folder nor a store with a latest.json")
    from job.storage.signing import checked_manifest

    manifest = checked_manifest(store, run, trust)  # read once; with --public-key a baseline must be signed (exit 3)
    metrics = read_metrics(store, run, manifest, f"--baseline {uri}: {METRICS}")  # hashed against that manifest
    accuracy = json_number(metrics.get("test_accuracy"))
    fingerprint = (metrics.get("data") or {}).get("test_fingerprint") if isinstance(metrics.get("data"), dict) else None
    if accuracy is None or not 0.0 <= accuracy <= 1.0:
        raise DataError(f"--baseline {uri}: {METRICS} has no test_accuracy between 0 and 1")
    return Baseline(
        store.location.describe(run) if run else store.uri,
        run or str(metrics.get("run_id") or ""),
        float(accuracy),
        fingerprint if isinstance(fingerprint, str) else "",
    )


def check_same_test_split(baseline: Baseline, fingerprint: str) -> None:
    """Before training: a comparison across different test splits means nothing (exit 2)."""
    if baseline.test_fingerprint != fingerprint:
        why = "records no test-split fingerprint" if not baseline.test_fingerprint else "was evaluated on other images"
        raise ConfigError(
            f"--baseline {baseline.uri} {why} (its test split {baseline.test_fingerprint[:12] or '-'}, this run's "
            f"{fingerprint[:12]}); compare runs of the same --data, --seed and --test-fraction"
        )


def gate(baseline: Baseline, accuracy: float, max_regression: float) -> dict:
    """After evaluation: the comparison for metrics.json, or QualityGateError (exit 6) naming both accuracies."""
    delta = accuracy - baseline.test_accuracy
    result = {
        **asdict(baseline),
        "this_test_accuracy": accuracy,
        "delta": round(delta, 6),
        "max_regression": max_regression,
        "passed": delta >= -max_regression,
    }
    if not result["passed"]:
        raise QualityGateError(
            f"test accuracy {accuracy:.4f} is {-delta:.4f} below the baseline's {baseline.test_accuracy:.4f} "
            f"({baseline.uri}), more than --max-regression {max_regression}; nothing was published"
        )
    return result

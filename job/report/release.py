"""A finished run folder's way out: its last files (provenance.json, model.sig, manifest.json), the one-line summary
of it (also latest.json's record), and the all-or-nothing publish that `job train` and `job publish` share. A run
that cannot be signed or uploaded is kept under the cache, with the command that publishes it without training."""

import logging
import shutil
from pathlib import Path

from job.config.parts import RunRecord
from job.errors import StorageError
from job.storage.layout import json_number

log = logging.getLogger("job")


def seal(run_dir: Path, record: RunRecord, platform, data_info: dict, signer, store_uri: str, cache_dir: str) -> None:
    """The run's last files: provenance.json (SLSA v1), model.sig with --sign-key, then manifest.json. A signing
    failure keeps the finished run (manifest included, unsigned) in the cache and ends in exit 4."""
    from job.report.provenance import write_provenance
    from job.storage.manifest import write_manifest
    from job.storage.signing import sign_or_keep

    write_provenance(run_dir, record, platform, data_info)
    if signer is None:
        write_manifest(run_dir, record.run_id)
        return
    try:
        sign_or_keep(run_dir, signer)
    except StorageError as exc:
        write_manifest(run_dir, record.run_id)
        kept = keep_unpublished(run_dir, record.run_id, cache_dir)
        if kept is None:
            raise StorageError(f"{exc}; nothing was published") from None
        raise StorageError(
            f"{exc}; nothing was published. The finished run is kept at {kept}; sign and publish it without "
            f"re-training: python -m job publish {kept} {store_uri} --sign-key KEY"
        ) from None
    write_manifest(run_dir, record.run_id)


def summary_of(metrics: dict, run_id: str, store_uri: str) -> dict:
    """The fields of the run's one-line summary (and of latest.json), from metrics.json's content. `job publish`
    reads that file from a folder that may be older or damaged: what is missing or not a number is null."""

    def number(value):
        return None if json_number(value) is None else round(value, 6)

    def record(value) -> dict:
        return value if isinstance(value, dict) else {}

    parity = record(metrics.get("parity"))
    diffs = [number(record(parity.get(b)).get("max_abs_diff")) for b in ("onnxruntime", "savedmodel")]
    int8 = metrics.get("int8")
    return {
        "run_id": run_id,
        "store": store_uri,
        "finished_at": metrics.get("finished_at") if isinstance(metrics.get("finished_at"), str) else None,
        "test_accuracy": number(metrics.get("test_accuracy")),
        "onnx_test_accuracy": number(metrics.get("onnx_test_accuracy")),
        "parity_max_abs_diff": max((d for d in diffs if d is not None), default=None),
        "durations_s": metrics.get("durations_s"),
        "peak_rss_mb": number(metrics.get("peak_rss_mb")),
        "int8": {k: record(int8).get(k) for k in ("test_accuracy", "accuracy_drop", "published")} if int8 else None,
        "baseline": metrics.get("baseline"),
    }


def publish(run_dir: Path, run_id: str, store, summary: dict, keep_in: str | None = None) -> dict:
    """The one publish path of `job train` and `job publish`: the store's all-or-nothing publish of a folder that
    holds its manifest (verified against it first). Returns `summary` with the run's URI (and the upload's
    figures, for S3) added. When `keep_in` is given (a cache folder, "" = the default one), a failed upload keeps
    the finished run there, since its staging folder is deleted, and names the command that publishes it without
    training again."""
    try:
        try:
            uri = store.publish(run_dir, run_id, summary)
        except OSError as exc:
            raise StorageError(f"publishing to {store.uri} failed ({exc})") from None
    except StorageError as exc:
        kept = keep_unpublished(run_dir, run_id, keep_in) if keep_in is not None else None
        if kept is None:
            raise
        raise StorageError(
            f"{exc}. The finished run is kept at {kept}; publish it without re-training: "
            f"python -m job publish {kept} {store.uri}"
        ) from None
    upload = store.location.last_upload
    return {**summary, "uri": uri, **({"upload": upload} if upload else {})}


def keep_unpublished(run_dir: Path, run_id: str, cache_dir: str) -> Path | None:
    """A copy of a finished run whose upload failed, out of staging (which is deleted), under the cache."""
    from job.data import default_cache_dir

    dest = (Path(cache_dir) if cache_dir else default_cache_dir()) / "unpublished" / run_id
    try:
        shutil.rmtree(dest, ignore_errors=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(run_dir, dest)
    except OSError as exc:
        log.warning("could not keep the unpublished run at %s (%s)", dest, exc)
        return None
    return dest

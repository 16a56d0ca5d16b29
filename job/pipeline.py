"""The run, stage by stage: store check -> data -> train -> evaluate -> export -> verify -> (quantize) ->
report -> publish. Each stage is one call into the package that owns it.

Everything is written into a staging folder; only a run that passed every gate is published, and the
manifest is its last file. Any failure (or signal) leaves the store untouched and the staging folder removed.
"""

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from job import stages
from job.config import Config
from job.errors import ConfigError, JobError, StorageError, exit_code_of
from job.runtime.telemetry import Timer, peak_rss_mb, versions
from job.storage import open_store, s3_options_from
from job.storage.files import out_of_space
from job.storage.pointer import json_number

log = logging.getLogger("job")


def run(cfg: Config, platform) -> dict:
    """Execute one training run and publish it. Returns the one-line summary."""
    timer = Timer()
    if platform.num_workers > 1 and cfg.checkpoint_dir.startswith("s3://"):
        raise ConfigError(
            "multi-worker checkpoints are TensorFlow checkpoints, written to a shared filesystem: give "
            "--checkpoint-dir a mounted path (SageMaker /opt/ml/checkpoints, Vertex /gcs/..., a volume)"
        )
    if not platform.is_chief:  # multi-worker: only the chief touches the store
        splits, _, strategy = prepare(cfg, timer, platform)
        with timer.stage("train"):
            from job.train.loop import train

            train(cfg, splits, checkpoints_for(cfg), strategy=strategy)
        return {
            "event": "worker_done",
            "run_id": cfg.run_id,
            "role": "worker",
            "published": False,
            "durations_s": timer.stages,
        }
    with timer.stage("store_check"):  # fail fast: before any data is read or any step is trained
        ends = open_ends(cfg, platform)
    staging = ends.store.staging_dir(cfg.run_id)
    try:
        return _stages_with_disk_check(cfg, platform, timer, ends, staging)
    except BaseException as exc:
        if ends.tracker:
            ends.tracker.fail(exit_code_of(exc))
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if ends.tracker:  # a second run in this process (tests, notebooks) must not report to this one's
            from job.runtime.events import unsubscribe

            unsubscribe(ends.tracker.on_event)


@dataclass(frozen=True)
class Ends:
    """What a run reads from and writes to besides its data, each probed before any data is read."""

    store: object  # job.storage.runs.RunStore
    checkpoints: object | None  # job.train.checkpoint.Checkpoints
    baseline: object | None  # job.report.baseline.Baseline
    tracker: object | None  # job.report.tracking.Tracker
    signer: object | None = None  # job.storage.signing.Signer (--sign-key)


def open_ends(cfg: Config, platform) -> Ends:
    from job.storage.signing import signer_of, trust_of

    signer = signer_of(cfg)  # a key that does not load: exit 2, before the store or the data is touched
    store = open_store(cfg.out, s3_options_from(cfg), cfg.layout)
    store.probe()
    checkpoints = checkpoints_for(cfg)
    if checkpoints:
        checkpoints.probe()
    from job.report.outputs import probe_outputs

    probe_outputs(cfg)  # TensorBoard, CI reports: unwritable means exit 4 now, not a lost training later
    baseline = None
    if cfg.baseline:
        from job.report.baseline import load_baseline

        baseline = load_baseline(cfg.baseline, s3_options_from(cfg), trust_of(cfg))
    return Ends(store, checkpoints, baseline, start_tracking(cfg, platform), signer)


def start_tracking(cfg: Config, platform):
    """An MLflow run beside the job's, when a tracking server is configured (probed first: exit 4 if down)."""
    if not cfg.mlflow:
        return None
    from job.report.tracking import Tracker, probe
    from job.runtime.events import subscribe

    probe(cfg.mlflow)
    tracker = Tracker(cfg, platform.name, versions())
    subscribe(tracker.on_event)
    return tracker


def _stages_with_disk_check(cfg: Config, platform, timer: Timer, ends: Ends, staging: Path) -> dict:
    try:
        return _run_stages(cfg, platform, timer, ends, staging)
    except JobError:
        raise
    except Exception as exc:  # a full disk, whichever library hit it (TensorFlow has its own error types)
        full = out_of_space(staging, exc)
        if full is None:
            raise
        raise full from None


def prepare(cfg: Config, timer: Timer, platform=None):
    """Data (before TensorFlow is imported: a bad source fails in well under a second), then TensorFlow set up."""
    from job import data

    with timer.stage("data"):
        splits = data.load_splits(cfg, s3_options_from(cfg))
    with timer.stage("startup"):
        from job.train.build import seed_everything
        from job.train.threads import configure_tensorflow

        threads = configure_tensorflow(cfg.threads, cfg.inter_op_threads)
        strategy = None
        if platform is not None and platform.num_workers > 1:
            from job.train.distributed import make_strategy

            strategy = make_strategy(platform.tf_config)  # before any other TensorFlow op
        seed_everything(cfg.seed, cfg.deterministic)
    log.info(
        "data: %s (%s) train=%d val=%d test=%d, %d classes%s",
        splits.info["source"],
        splits.info["test_split"],
        *splits.info["sizes"].values(),
        splits.num_classes,
        ", decoded arrays from cache" if splits.info["from_cache"] else "",
    )
    return splits, threads, strategy


def checkpoints_for(cfg: Config):
    if not cfg.checkpoint_dir:
        return None
    from job.train.checkpoint import Checkpoints

    return Checkpoints(cfg.checkpoint_dir, cfg.run_id, s3_options_from(cfg))


def _run_stages(cfg: Config, platform, timer: Timer, ends: Ends, run_dir: Path) -> dict:
    splits, threads, strategy = prepare(cfg, timer, platform)
    if ends.baseline:  # before training: a comparison across different test splits is refused at once
        from job.report.baseline import check_same_test_split

        check_same_test_split(ends.baseline, splits.info["test_fingerprint"])
    with timer.stage("train"):
        trained = stages.train(cfg, splits, ends.checkpoints, strategy)
    with timer.stage("evaluate"):
        evaluated = stages.evaluate(
            trained.net,
            splits,
            tta_level=cfg.tta_level,
            min_accuracy=cfg.min_accuracy,
            baseline=ends.baseline,
            max_regression=cfg.max_regression,
        )
    with timer.stage("export"):
        stages.export(cfg, trained, evaluated, splits, run_dir)
    with timer.stage("verify"):
        parity = stages.verify(cfg, evaluated, splits, run_dir)
    int8 = None
    if cfg.int8:
        with timer.stage("quantize"):
            int8 = stages.quantize(cfg, parity, splits, run_dir)
    with timer.stage("report"):
        from job.report.files import RunRecord, write_report

        record = RunRecord(
            platform=platform.name,
            splits=splits,
            history=trained.history,
            train_seconds=trained.seconds,
            optimizer_steps=trained.optimizer_steps,
            resumed_from=trained.resumed_from,
            finished_at=trained.finished_at,
            test=evaluated.test,
            test_probs=evaluated.probs,
            parity=parity,
            int8=int8,
            baseline=evaluated.baseline,
            threads=threads,
        )
        metrics = write_report(run_dir, cfg, record)
    metrics = {**metrics, "durations_s": timer.durations(), "peak_rss_mb": peak_rss_mb()}
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    with timer.stage("publish"):
        seal(run_dir, cfg, platform, splits.info, ends.signer, ends.store.uri)
        tracker, store = ends.tracker, ends.store
        mlflow = tracker.finish(run_dir, metrics, splits.x_test[:2]) if tracker else None
        published = publish(run_dir, cfg.run_id, store, summary_of(metrics, cfg.run_id, store.uri), cfg.cache_dir)
        if tracker:
            tracker.close()
    return {
        "event": "run_complete",
        **published,
        **({"mlflow": mlflow} if mlflow else {}),
        "durations_s": timer.durations(),
    }


def seal(run_dir: Path, cfg: Config, platform, data_info: dict, signer, store_uri: str) -> None:
    """The run's last files: provenance.json (SLSA v1), model.sig with --sign-key, then manifest.json. A signing
    failure keeps the finished run (manifest included, unsigned) in the cache and ends in exit 4."""
    from job.report.provenance import write_provenance
    from job.storage.manifest import write_manifest
    from job.storage.signing import sign_or_keep

    write_provenance(run_dir, cfg, platform, data_info)
    if signer is None:
        write_manifest(run_dir, cfg.run_id)
        return
    try:
        sign_or_keep(run_dir, signer)
    except StorageError as exc:
        write_manifest(run_dir, cfg.run_id)
        kept = keep_unpublished(run_dir, cfg.run_id, cfg.cache_dir)
        if kept is None:
            raise StorageError(f"{exc}; nothing was published") from None
        raise StorageError(
            f"{exc}; nothing was published. The finished run is kept at {kept}; sign and publish it without "
            f"re-training: python -m job publish {kept} {store_uri} --sign-key KEY"
        ) from None
    write_manifest(run_dir, cfg.run_id)


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

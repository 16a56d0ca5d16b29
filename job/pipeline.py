"""The run, stage by stage (job.stages): store check -> data -> train -> evaluate -> export -> verify -> (quantize)
-> report -> publish, each inside its timer; and `job publish`, which sends a finished run folder through the
same publish path.

Everything is written into a staging folder; only a run that passed every gate is published, and the
manifest is its last file. Any failure (or signal) leaves the store untouched and the staging folder removed.
This is where the whole Config is taken apart: each stage gets the pieces it uses (job.config.parts).
"""

import shutil
from collections.abc import Callable
from pathlib import Path

from job import stages
from job.config import Config
from job.errors import ConfigError, JobError, exit_code_of
from job.gates.text import json_text
from job.report.release import publish, summary_of
from job.runtime.telemetry import Timer, peak_rss_mb
from job.storage.files import out_of_space
from job.storage.layout import METRICS

__all__ = ["prepare", "publish", "republish", "run", "summary_of"]


def run(cfg: Config, platform) -> dict:
    """Execute one training run and publish it. Returns the one-line summary."""
    timer = Timer()
    if platform.num_workers > 1 and cfg.checkpoint_dir.startswith("s3://"):
        raise ConfigError(
            "multi-worker checkpoints are TensorFlow checkpoints, written to a shared filesystem: give "
            "--checkpoint-dir a mounted path (SageMaker /opt/ml/checkpoints, Vertex /gcs/..., a volume)"
        )
    if not platform.is_chief:  # multi-worker: only the chief touches the store
        return _train_as_worker(cfg, platform, timer)
    with timer.stage("store_check"):  # fail fast: before any data is read or any step is trained
        ends = stages.store_check(cfg, platform.name)
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


def _train_as_worker(cfg: Config, platform, timer: Timer) -> dict:
    splits, _, strategy = prepare(cfg, timer, platform)
    with timer.stage("train"):
        from job.train.loop import train

        checkpoints = stages.open_checkpoints(cfg.runtime, cfg.run_id, cfg.publishing.s3)
        train(cfg.training, splits, checkpoints, strategy=strategy)
    return {
        "event": "worker_done",
        "run_id": cfg.run_id,
        "role": "worker",
        "published": False,
        "durations_s": timer.stages,
    }


def prepare(cfg: Config, timer: Timer, platform=None, checkpoints=None):
    """The data stage, the checkpoint's check (if any), then TensorFlow's startup; returns (splits, threads,
    strategy)."""
    multi_worker = platform is not None and platform.num_workers > 1
    with timer.stage("data"):
        splits = stages.data(cfg.dataset, cfg.publishing.s3)
        if checkpoints is not None and not multi_worker:  # the cluster's checkpoints are TensorFlow's own format
            stages.resumable(checkpoints, cfg.training, splits)
    with timer.stage("startup"):
        threads, strategy = stages.startup(cfg.runtime, cfg.training, platform.tf_config if multi_worker else None)
    return splits, threads, strategy


def _stages_with_disk_check(cfg: Config, platform, timer: Timer, ends: stages.Ends, staging: Path) -> dict:
    try:
        return _run_stages(cfg, platform, timer, ends, staging)
    except JobError:
        raise
    except Exception as exc:  # a full disk, whichever library hit it (TensorFlow has its own error types)
        full = out_of_space(staging, exc)
        if full is None:
            raise
        raise full from None


def _run_stages(cfg: Config, platform, timer: Timer, ends: stages.Ends, run_dir: Path) -> dict:
    splits, threads, strategy = prepare(cfg, timer, platform, ends.checkpoints)
    if ends.baseline:  # before training: a comparison across different test splits is refused at once
        from job.report.baseline import check_same_test_split

        check_same_test_split(ends.baseline, splits.info["test_fingerprint"])
    gates, record, seed, threads_used = cfg.gates, cfg.record, cfg.seed, cfg.runtime.threads
    with timer.stage("train"):
        trained = stages.train(cfg.training, splits, ends.checkpoints, strategy)
    with timer.stage("evaluate"):
        evaluated = stages.evaluate(trained.net, splits, record.tta_level, gates, ends.baseline)
    with timer.stage("export"):
        stages.export(record, trained, evaluated, splits, run_dir)
    with timer.stage("verify"):
        parity = stages.verify(evaluated, splits, run_dir, gates, seed=seed, threads=threads_used, layout=cfg.layout)
    int8 = None
    if gates.int8:
        with timer.stage("quantize"):
            int8 = stages.quantize(parity, splits, run_dir, gates, seed=seed, threads=threads_used)
    with timer.stage("report"):
        made = (trained, evaluated, parity, int8, threads)
        metrics = stages.report(run_dir, record, platform.name, splits, made)
    metrics = {**metrics, "durations_s": timer.durations(), "peak_rss_mb": peak_rss_mb()}
    (run_dir / METRICS).write_text(json_text(metrics, indent=2) + "\n")  # strict: a diverged loss is null
    with timer.stage("publish"):
        published = stages.publish(run_dir, record, platform, ends, metrics, splits, cfg.cache_dir)
    return {"event": "run_complete", **published, "durations_s": timer.durations()}


def republish(run_dir: Path, settings, started: Callable[[], None]) -> dict:
    """`job publish`: a finished run folder (kept after a failed upload, or copied) through `job train`'s own
    publish path, signed on the way with --sign-key (the given folder is never changed). `settings`: the store
    (`out`), run id, S3 and signing settings (job.config.resolve_settings); `started`: called once the folder is
    accepted, before the store is opened. Returns the `run_published` event's fields."""
    from job.config.parts import S3Options, SigningConfig
    from job.storage import open_store
    from job.storage.layout import read_metrics
    from job.storage.runs import run_folder
    from job.storage.signing import signed_copy, signer_of

    store_uri = settings.out
    signer = signer_of(SigningConfig.of(settings))  # a key that does not load: exit 2, before the store is touched
    if not store_uri.startswith("s3://") and run_dir.resolve().parent == Path(store_uri).expanduser().resolve():
        raise ConfigError(
            f"{run_dir} is already in the store {store_uri}; publish it to another store, or copy it out first"
        )
    started()
    store = open_store(store_uri, S3Options.of(settings) if store_uri.startswith("s3://") else None)
    try:
        metrics = read_metrics(run_folder(run_dir)) or {}
    except (OSError, JobError):  # the manifest decides what is published; the summary is best effort
        metrics = {}
    summary = summary_of(metrics, settings.run_id, store.uri)
    if signer is None:
        return publish(run_dir, settings.run_id, store, summary)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="publish-signed-") as tmp:
        signed = signed_copy(run_dir, settings.run_id, signer, Path(tmp))
        return {**publish(signed, settings.run_id, store, summary), "signed_by": signer.fingerprint}

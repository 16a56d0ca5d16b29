"""The run, stage by stage: store check -> data -> train -> evaluate -> export -> verify -> (quantize) ->
report -> publish. Each stage is one call into the package that owns it.

Everything is written into a staging folder; only a run that passed every gate is published, and the
manifest is its last file. Any failure (or signal) leaves the store untouched and the staging folder removed.
"""

import json
import logging
import shutil
from pathlib import Path

from job.config import Config
from job.errors import ConfigError, JobError, QualityGateError, StorageError, exit_code_of
from job.runtime.telemetry import Timer, peak_rss_mb, versions
from job.storage import open_store, s3_options_from
from job.storage.files import out_of_space
from job.storage.pointer import utc_now
from job.storage.runs import savedmodel_dir

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
    store = open_store(cfg.out, s3_options_from(cfg), cfg.layout)
    checkpoints = checkpoints_for(cfg)
    with timer.stage("store_check"):  # fail fast: before any data is read or any step is trained
        store.probe()
        if checkpoints:
            checkpoints.probe()
        baseline = None
        if cfg.baseline:
            from job.report.baseline import load_baseline

            baseline = load_baseline(cfg.baseline, s3_options_from(cfg))
        tracker = start_tracking(cfg, platform)
    staging = store.staging_dir(cfg.run_id)
    try:
        return _stages_with_disk_check(cfg, platform, timer, store, checkpoints, staging, tracker, baseline)
    except BaseException as exc:
        if tracker:
            tracker.fail(exit_code_of(exc))
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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


def _stages_with_disk_check(
    cfg: Config, platform, timer: Timer, store, checkpoints, staging: Path, tracker, baseline
) -> dict:
    try:
        return _run_stages(cfg, platform, timer, store, checkpoints, staging, tracker, baseline)
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


def _run_stages(cfg: Config, platform, timer: Timer, store, checkpoints, run_dir: Path, tracker, baseline) -> dict:
    splits, threads, strategy = prepare(cfg, timer, platform)
    if baseline:  # before training: a comparison across different test splits is refused at once
        from job.report.baseline import check_same_test_split

        check_same_test_split(baseline, splits.info["test_fingerprint"])
    with timer.stage("train"):
        from job.train.build import inference_copy
        from job.train.loop import train

        result = train(cfg, splits, checkpoints, strategy=strategy)
    finished_at = utc_now()  # training's end: what orders a store's runs (latest.json, `job runs list`)
    net = inference_copy(result.model, cfg, splits.num_classes)

    with timer.stage("evaluate"):
        from job.export.inference import inference_function, predict
        from job.report.metrics import evaluate

        serve = inference_function(net, cfg.tta_level)
        probs = predict(serve, splits.x_test)
        metrics = evaluate(probs, splits.y_test, splits.class_names)
    accuracy = metrics["test_accuracy"]
    log.info(
        "test: accuracy %.4f, loss %.4f on %d held-out images", accuracy, metrics["test_loss"], metrics["test_size"]
    )
    if accuracy < cfg.min_accuracy:
        raise QualityGateError(
            f"test accuracy {accuracy:.4f} is below --min-accuracy {cfg.min_accuracy}; "
            "nothing was published (train longer, or lower the gate)"
        )
    if baseline:
        from job.report.baseline import gate

        metrics["baseline"] = gate(baseline, accuracy, cfg.max_regression)
        log.info(
            "baseline: %+.4f against %s (%.4f)", metrics["baseline"]["delta"], baseline.uri, baseline.test_accuracy
        )

    with timer.stage("export"):
        from job.export.bundle import export_model

        export_model(
            net,
            serve,
            run_dir,
            class_names=splits.class_names,
            run_id=cfg.run_id,
            preset=cfg.preset,
            test_accuracy=accuracy,
            tta_level=cfg.tta_level,
            versions=versions(),
            savedmodel_dir=savedmodel_dir(cfg.layout),
        )

    with timer.stage("verify"):
        from job.export import gate

        parity, onnx_test_probs = gate.verify(run_dir, serve, splits, cfg, probs, savedmodel_dir(cfg.layout))
    log.info(
        "parity: onnxruntime max|dprob| %.2e, savedmodel max|dprob| %.2e, onnx test accuracy %.4f",
        parity["onnxruntime"]["max_abs_diff"],
        parity["savedmodel"]["max_abs_diff"],
        parity["onnx_test_accuracy"],
    )

    int8 = None
    if cfg.int8:
        with timer.stage("quantize"):
            int8 = gate.quantize(run_dir, splits, cfg, parity["onnx_test_accuracy"], onnx_test_probs)
            if cfg.int8_vnni:
                int8["vnni"] = gate.quantize(
                    run_dir, splits, cfg, parity["onnx_test_accuracy"], onnx_test_probs, "vnni"
                )
        log.info(
            "int8: test accuracy %.4f (drop %.4f), argmax agreement with float %.4f, %s",
            int8["test_accuracy"],
            int8["accuracy_drop"],
            int8["argmax_agreement"],
            "published" if int8["published"] else "not published: " + int8["reason"],
        )

    with timer.stage("report"):
        from job.report.files import write_report

        full = write_report(
            run_dir,
            cfg,
            platform.name,
            splits,
            result,
            metrics,
            parity,
            int8,
            threads,
            optimizer_steps=int(result.model.optimizer.iterations.numpy()),
            test_probs=probs,
        )
        full["finished_at"] = finished_at

    full["durations_s"] = timer.durations()
    full["peak_rss_mb"] = peak_rss_mb()
    (run_dir / "metrics.json").write_text(json.dumps(full, indent=2) + "\n")
    summary = {
        "event": "run_complete",
        "run_id": cfg.run_id,
        "store": store.uri,
        "finished_at": finished_at,
        "test_accuracy": round(accuracy, 6),
        "onnx_test_accuracy": round(full["onnx_test_accuracy"], 6),
        "parity_max_abs_diff": max(
            full["parity"]["onnxruntime"]["max_abs_diff"], full["parity"]["savedmodel"]["max_abs_diff"]
        ),
        "durations_s": full["durations_s"],
        "peak_rss_mb": full["peak_rss_mb"],
        "int8": {k: full["int8"][k] for k in ("test_accuracy", "accuracy_drop", "published")}
        if full.get("int8")
        else None,
        "baseline": full.get("baseline"),
    }
    with timer.stage("publish"):
        summary["uri"] = publish(run_dir, cfg, store, summary, tracker, full, splits.x_test[:2])
    summary["durations_s"] = timer.durations()
    return summary


def publish(run_dir: Path, cfg: Config, store, summary: dict, tracker=None, metrics=None, sample=None) -> str:
    """Manifest last, the MLflow run's results (it is marked FAILED if the store then fails), then the store's
    all-or-nothing publish. A failed upload keeps the finished run in the cache and names the command that
    publishes it without training again."""
    from job.storage.manifest import write_manifest

    write_manifest(run_dir, cfg.run_id)
    if tracker:
        summary["mlflow"] = tracker.finish(run_dir, metrics, sample)
    try:
        try:
            uri = store.publish(run_dir, cfg.run_id, summary)
            if getattr(store.location, "last_upload", None):
                summary["upload"] = store.location.last_upload
            if tracker:
                tracker.close()
            return uri
        except OSError as exc:
            raise StorageError(f"publishing to {store.uri} failed ({exc})") from None
    except StorageError as exc:
        kept = keep_unpublished(run_dir, cfg)
        if kept is None:
            raise
        raise StorageError(
            f"{exc}. The finished run is kept at {kept}; publish it without re-training: "
            f"python -m job publish {kept} {store.uri}"
        ) from None


def keep_unpublished(run_dir: Path, cfg: Config) -> Path | None:
    """A finished run whose upload failed is copied out of staging (which is deleted) into the cache."""
    from job.data import default_cache_dir

    dest = (Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()) / "unpublished" / cfg.run_id
    try:
        shutil.rmtree(dest, ignore_errors=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(run_dir, dest)
    except OSError as exc:
        log.warning("could not keep the unpublished run at %s (%s)", dest, exc)
        return None
    return dest

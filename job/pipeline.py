"""The run, stage by stage: data -> train -> evaluate -> export -> verify -> publish.

Everything is written into a staging folder; only a run that passed every gate is published, and
the manifest is its last file. Any failure raises a JobError and leaves the store untouched.
"""

from __future__ import annotations

import contextlib
import json
import logging
import resource
import shutil
import sys
import time
from pathlib import Path

from job.config import Config
from job.errors import ParityError, QualityGateError, StorageError

log = logging.getLogger("job")


class Timer:
    def __init__(self):
        self.stages: dict[str, float] = {}
        self.started = time.perf_counter()

    @contextlib.contextmanager
    def stage(self, name: str):
        log.info("stage %s: started", name)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.stages[name] = round(time.perf_counter() - t0, 3)
        log.info("stage %s: done in %.1fs", name, self.stages[name])

    @property
    def total(self) -> float:
        return round(time.perf_counter() - self.started, 3)


def peak_rss_mb() -> float:
    """Peak resident memory of this process and its finished children (decode workers), in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, children) / 1024, 1)


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for pkg in ("tensorflow-cpu", "tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "numpy",
                "scikit-learn", "cifar10-job"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def run(cfg: Config, platform) -> dict:
    """Execute one training run and publish it. Returns the one-line summary."""
    from job.store import open_store

    timer = Timer()
    if not platform.is_chief:  # multi-worker: only the chief touches the store
        return _run_worker(cfg, platform, timer)
    store = open_store(cfg)
    with timer.stage("store_check"):
        store.probe()  # fail fast: before any data is read or any step is trained

    staging = store.staging_dir(cfg.run_id)
    try:
        summary = _run_stages(cfg, platform, timer, store, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return summary


def _prepare(cfg: Config, timer: Timer, platform=None):
    from job import data

    with timer.stage("data"):  # before TensorFlow is imported: a bad source fails in well under a second
        dataset = data.load(cfg.data, Path(cfg.cache_dir) if cfg.cache_dir else None, _s3_options(cfg))
        splits = data.split(dataset, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction,
                            seed=cfg.seed, limit=cfg.limit)
        splits.info["from_cache"] = dataset.from_cache
    with timer.stage("startup"):
        from job.resources import configure_tensorflow
        threads = configure_tensorflow(cfg.threads, cfg.inter_op_threads)
        from job import train as train_lib
        if platform is not None and platform.num_workers > 1:
            train_lib.use_multi_worker_strategy()  # before any other TensorFlow op
        train_lib.seed_everything(cfg.seed, cfg.deterministic)
    log.info("data: %s (%s) train=%d val=%d test=%d, %d classes%s", splits.info["source"],
             splits.info["test_split"], *splits.info["sizes"].values(), splits.num_classes,
             ", decoded arrays from cache" if dataset.from_cache else "")
    return splits, threads, train_lib


def _s3_options(cfg: Config):
    if cfg.data.startswith("s3://") or cfg.out.startswith("s3://") or cfg.checkpoint_dir.startswith("s3://"):
        from job.s3 import options_from_config
        return options_from_config(cfg)
    return None


def _checkpoints(cfg: Config):
    if not cfg.checkpoint_dir:
        return None
    from job.checkpoint import Checkpoints
    return Checkpoints(cfg.checkpoint_dir, cfg.run_id, _s3_options(cfg))


def _run_worker(cfg: Config, platform, timer: Timer) -> dict:
    """A non-chief multi-worker replica trains in lockstep with the chief and writes nothing to the store."""
    splits, _, train_lib = _prepare(cfg, timer, platform)
    with timer.stage("train"):
        train_lib.train(cfg, splits, None)
    return {"run_id": cfg.run_id, "role": "worker", "published": False, "durations_s": timer.stages}


def _run_stages(cfg: Config, platform, timer: Timer, store, run_dir: Path) -> dict:
    from job import evaluate as ev

    splits, threads, train_lib = _prepare(cfg, timer, platform)
    with timer.stage("train"):
        result = train_lib.train(cfg, splits, _checkpoints(cfg))
    optimizer_steps = int(result.model.optimizer.iterations.numpy())
    net = train_lib.inference_copy(result.model, cfg, splits.num_classes)

    with timer.stage("evaluate"):
        from export.inference import inference_function, predict
        serve = inference_function(net, tta=cfg.tta)
        probs = predict(serve, splits.x_test)
        metrics = ev.evaluate(probs, splits.y_test, splits.class_names)
    accuracy = metrics["test_accuracy"]
    log.info("test: accuracy %.4f, loss %.4f on %d held-out images", accuracy, metrics["test_loss"],
             metrics["test_size"])
    if accuracy < cfg.min_accuracy:
        raise QualityGateError(f"test accuracy {accuracy:.4f} is below --min-accuracy {cfg.min_accuracy}; "
                               "nothing was published (train longer, or lower the gate)")

    with timer.stage("export"):
        from export import contract
        from export.onnx_export import OnnxExportError, export_onnx
        from export.savedmodel import export_savedmodel
        net.save(run_dir / "model.keras")
        export_savedmodel(net, serve, run_dir / "saved_model")
        meta = contract.metadata(splits.class_names, run_id=cfg.run_id, preset=cfg.preset,
                                 test_accuracy=accuracy, tta=cfg.tta, versions=versions())
        try:
            export_onnx(serve, run_dir / "model.onnx", meta)
        except OnnxExportError as exc:
            raise ParityError(f"{exc}; nothing was published") from None

    with timer.stage("verify"):
        parity, onnx_test_probs = verify(run_dir, serve, splits, cfg, probs)
    log.info("parity: onnxruntime max|dprob| %.2e, savedmodel max|dprob| %.2e, onnx test accuracy %.4f",
             parity["onnxruntime"]["max_abs_diff"], parity["savedmodel"]["max_abs_diff"],
             parity["onnx_test_accuracy"])

    int8 = None
    if cfg.int8:
        with timer.stage("quantize"):
            int8 = quantize(run_dir, splits, cfg, parity, onnx_test_probs)
        log.info("int8: test accuracy %.4f (drop %.4f), argmax agreement with float %.4f, %s",
                 int8["test_accuracy"], int8["accuracy_drop"], int8["argmax_agreement"],
                 "published" if int8["published"] else "not published: " + int8["reason"])

    with timer.stage("report"):
        from job.train import write_history
        write_history(result.history, run_dir / "history.csv")
        ev.plot_curves(result.history, run_dir / "curves.png")
        ev.plot_confusion_matrix(metrics["confusion_matrix"], splits.class_names, run_dir / "confusion_matrix.png")
        (run_dir / "classification_report.txt").write_text(metrics.pop("classification_report_text"))
        (run_dir / "config.json").write_text(cfg.to_json())
        full = {
            "run_id": cfg.run_id, "preset": cfg.preset, "platform": platform.name,
            "data": splits.info, **metrics,
            "onnx_test_accuracy": parity.pop("onnx_test_accuracy"), "parity": parity,
            "training": {"epochs": cfg.epochs, "seconds": round(result.seconds, 3),
                         "images_per_second": round(len(splits.y_train) * len(result.history)
                                                    / max(result.seconds, 1e-9), 1),
                         "optimizer_steps": optimizer_steps, "precision": cfg.precision,
                         "resumed_from": result.resumed_from, "final": result.history[-1] if result.history else {}},
            "threads": {"intra_op": threads[0], "inter_op": threads[1]},
            **({"int8": int8} if int8 else {}),
            "versions": versions(),
        }
        from job.model_card import write_model_card
        write_model_card(run_dir, cfg, full)

    full["durations_s"] = {**timer.stages, "total": timer.total}
    full["peak_rss_mb"] = peak_rss_mb()
    (run_dir / "metrics.json").write_text(json.dumps(full, indent=2) + "\n")

    summary = {"event": "run_complete", "run_id": cfg.run_id, "store": store.uri,
               "test_accuracy": round(accuracy, 6), "onnx_test_accuracy": round(full["onnx_test_accuracy"], 6),
               "parity_max_abs_diff": max(full["parity"]["onnxruntime"]["max_abs_diff"],
                                          full["parity"]["savedmodel"]["max_abs_diff"]),
               "durations_s": full["durations_s"], "peak_rss_mb": full["peak_rss_mb"]}
    with timer.stage("publish"):
        from job.manifest import write_manifest
        write_manifest(run_dir, cfg.run_id)
        try:
            try:
                summary["uri"] = store.publish(run_dir, cfg.run_id, summary)
            except OSError as exc:
                raise StorageError(f"publishing to {store.uri} failed ({exc})") from None
        except StorageError as exc:
            kept = keep_unpublished(run_dir, cfg)
            if kept is None:
                raise
            raise StorageError(f"{exc}. The finished run is kept at {kept}; publish it without re-training: "
                               f"python -m job publish {kept} {store.uri}") from None
    summary["durations_s"] = {**timer.stages, "total": timer.total}
    return summary


def keep_unpublished(run_dir: Path, cfg: Config) -> Path | None:
    """A finished run whose upload failed is moved out of staging (which is deleted) into the cache."""
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


def verify(run_dir: Path, serve, splits, cfg: Config, keras_test_probs):
    """The gate: ONNX checker, ORT and the reloaded SavedModel vs Keras. Raises ParityError.
    Returns the parity report and ONNX Runtime's probabilities on the test split."""
    import numpy as np

    from export.inference import predict
    from export.onnx_export import ort_session
    from export.parity import compare, parity_inputs, run_onnx
    from export.savedmodel import load_savedmodel

    inputs = parity_inputs(splits.x_test, cfg.seed)
    reference = [keras_test_probs] + [predict(serve, x) for x in inputs[1:]]
    try:
        session = ort_session(run_dir / "model.onnx", cfg.threads)
    except Exception as exc:
        raise ParityError(f"ONNX Runtime cannot load the exported model.onnx ({exc}); nothing was published") from None
    onnx_out = [run_onnx(session, x) for x in inputs]
    saved = load_savedmodel(run_dir / "saved_model")
    saved_out = [predict(saved, x) for x in inputs]
    results = {"onnxruntime": compare("onnxruntime", reference, onnx_out),
               "savedmodel": compare("savedmodel", reference, saved_out)}
    report = {name: r.as_dict() for name, r in results.items()}
    report["tolerance"] = cfg.parity_tolerance
    report["random_batch_sizes"] = [len(x) for x in inputs[1:]]
    report["onnx_test_accuracy"] = float(np.mean(onnx_out[0].argmax(axis=1) == splits.y_test))
    failed = [r for r in results.values() if not r.ok(cfg.parity_tolerance)]
    if failed:
        worst = failed[0]
        raise ParityError(f"{worst.backend} disagrees with Keras: max |dprob| {worst.max_abs_diff:.3g} "
                          f"(tolerance {cfg.parity_tolerance:g}), {worst.argmax_mismatches} argmax mismatches "
                          f"of {worst.samples}; nothing was published")
    return report, onnx_out[0]


def quantize(run_dir: Path, splits, cfg: Config, parity: dict, float_probs) -> dict:
    """model.int8.onnx, kept only when its test accuracy is within cfg.int8_max_drop of the float model's."""
    import numpy as np

    from export.onnx_export import ort_session
    from export.parity import run_onnx
    from export.quantize import calibration_images, quantize_int8

    calibration = calibration_images(splits.x_train, cfg.seed)
    path = run_dir / "model.int8.onnx"
    quantize_int8(run_dir / "model.onnx", path, calibration)
    int8_probs = run_onnx(ort_session(path, cfg.threads), splits.x_test)
    accuracy = float(np.mean(int8_probs.argmax(1) == splits.y_test))
    drop = parity["onnx_test_accuracy"] - accuracy
    report = {"test_accuracy": accuracy, "accuracy_drop": drop,
              "argmax_agreement": float(np.mean(int8_probs.argmax(1) == float_probs.argmax(1))),
              "max_abs_diff": float(np.abs(int8_probs - float_probs).max()),
              "calibration_images": len(calibration), "max_drop": cfg.int8_max_drop,
              "published": drop <= cfg.int8_max_drop, "bytes": path.stat().st_size}
    if not report["published"]:
        report["reason"] = f"accuracy drop {drop:.4f} exceeds --int8-max-drop {cfg.int8_max_drop}"
        path.unlink()
    return report

"""The run's stages, in order: store check -> data (and startup) -> train -> evaluate -> export -> verify ->
(quantize) -> report -> publish. Each is one call that takes the config pieces it uses (job.config.parts) and
returns what it made (a frozen dataclass, or nothing where the product is files); none changes its arguments.
job.pipeline strings them together inside their timers. Only the store check reads the whole Config: it opens
everything a run reads from and writes to besides its data.

TensorFlow is imported inside the calls: importing this module costs nothing.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from job.config import Config
from job.config.parts import DataConfig, GateConfig, RunRecord, RuntimeConfig, S3Options, TrainConfig
from job.data.dataset import Splits
from job.errors import QualityGateError
from job.export.parity import Parity
from job.report.metrics import HoldoutMetrics
from job.runtime.telemetry import versions
from job.storage import open_store
from job.storage.layout import savedmodel_dir
from job.storage.pointer import utc_now

if TYPE_CHECKING:
    import keras

log = logging.getLogger("job")


@dataclass(frozen=True)
class Ends:
    """What a run reads from and writes to besides its data, each probed before any data is read."""

    store: object  # job.storage.runs.RunStore
    checkpoints: object | None  # job.train.checkpoint.Checkpoints
    baseline: object | None  # job.report.baseline.Baseline
    tracker: object | None  # job.report.tracking.Tracker
    signer: object | None = None  # job.storage.signing.Signer (--sign-key)


@dataclass(frozen=True)
class Trained:
    net: "keras.Model"  # the trained weights in an uncompiled float32 model (job.train.build.inference_copy)
    history: list[dict]
    seconds: float
    optimizer_steps: int
    resumed_from: dict | None
    finished_at: str  # training's end: what orders a store's runs (latest.json, `job runs list`)


@dataclass(frozen=True)
class Evaluated:
    serve: Callable  # the inference function (uint8 images -> probabilities, TTA inside) that is exported
    probs: np.ndarray  # its probabilities on the test split
    test: HoldoutMetrics
    baseline: dict | None  # the regression gate's comparison, when --baseline is set


def store_check(cfg: Config, platform_name: str) -> Ends:
    """Fail fast, before any data is read: the signing key loads, the store, checkpoint folder, TensorBoard folder
    and CI report files are writable, the baseline is read and trusted, the tracking server answers."""
    from job.report.outputs import probe_outputs
    from job.storage.signing import signer_of, trust_of

    publishing, gates = cfg.publishing, cfg.gates
    signer = signer_of(publishing.signing)  # a key that does not load: exit 2, before the store is touched
    store = open_store(publishing.out, publishing.s3, publishing.layout)
    store.probe()
    checkpoints = open_checkpoints(cfg.runtime, publishing.run_id, publishing.s3)
    if checkpoints:
        checkpoints.probe()
    probe_outputs(cfg.runtime.log_dir)  # unwritable means exit 4 now, not a lost training later
    baseline = None
    if gates.baseline:
        from job.report.baseline import load_baseline

        baseline = load_baseline(gates.baseline, publishing.s3, trust_of(gates.trust))
    tracker = start_tracking(cfg.record, publishing.tracking, gates, platform_name)
    return Ends(store, checkpoints, baseline, tracker, signer)


def open_checkpoints(runtime: RuntimeConfig, run_id: str, s3: S3Options | None):
    if not runtime.checkpoint_dir:
        return None
    from job.train.checkpoint import Checkpoints  # the storage side only; TensorFlow loads on resume

    return Checkpoints(runtime.checkpoint_dir, run_id, s3)


def start_tracking(record: RunRecord, tracking, gates: GateConfig, platform_name: str):
    """An MLflow run beside the job's, when a tracking server is configured (probed first: exit 4 if down)."""
    if not tracking.uri:
        return None
    from job.report.tracking import Tracker, probe
    from job.runtime.events import subscribe

    probe(tracking.uri)
    tracker = Tracker(record, tracking, gates, platform_name, versions())
    subscribe(tracker.on_event)
    return tracker


def data(dataset: DataConfig, s3: S3Options | None) -> Splits:
    """The splits, before TensorFlow is imported: a bad source fails in well under a second."""
    from job.data import load_splits

    splits = load_splits(dataset, s3)
    log.info(
        "data: %s (%s) train=%d val=%d test=%d, %d classes%s",
        splits.info["source"],
        splits.info["test_split"],
        *splits.info["sizes"].values(),
        splits.num_classes,
        ", decoded arrays from cache" if splits.info["from_cache"] else "",
    )
    return splits


def resumable(checkpoints, training: TrainConfig, splits: Splits) -> None:
    """A checkpoint this run cannot resume (another configuration or data, a corrupt state.json, past --epochs) is
    refused before TensorFlow starts (CheckpointError, exit 7): 0.1 s instead of 3 s."""
    from job.train.checkpoint import fingerprint

    checkpoints.check(fingerprint(training, splits), training.optim.epochs)


def startup(runtime: RuntimeConfig, train: TrainConfig, tf_config: dict | None = None) -> tuple:
    """TensorFlow set up: its threads, the multi-worker strategy (`tf_config`, before any other TensorFlow op) and
    the seeds. Returns (intra-op, inter-op) threads and the strategy (None on one worker)."""
    from job.train.build import seed_everything
    from job.train.threads import configure_tensorflow

    threads = configure_tensorflow(runtime.threads, runtime.inter_op_threads)
    strategy = None
    if tf_config is not None:
        from job.train.distributed import make_strategy

        strategy = make_strategy(tf_config)
    seed_everything(train.inputs.seed, train.deterministic)
    return threads, strategy


def train(training: TrainConfig, splits: Splits, checkpoints=None, strategy=None, callbacks=()) -> Trained:
    """`callbacks`: extra Keras callbacks for the single-worker loop (bench.train_curve's per-epoch test curve)."""
    from job.train.build import inference_copy
    from job.train.loop import train as train_loop

    result = train_loop(training, splits, checkpoints, extra_callbacks=callbacks, strategy=strategy)
    return Trained(
        net=inference_copy(result.model, training.model, splits.num_classes),
        history=list(result.history),
        seconds=result.seconds,
        optimizer_steps=int(result.model.optimizer.iterations.numpy()),
        resumed_from=result.resumed_from,
        finished_at=utc_now(),
    )


def evaluate(net, splits: Splits, tta_level: int, gates: GateConfig, baseline=None) -> Evaluated:
    """Test metrics of the model as exported (TTA included); raises QualityGateError (exit 6) below
    --min-accuracy or more than --max-regression below the baseline."""
    from job.export.inference import inference_function, predict
    from job.report.metrics import evaluate as metrics_of

    serve = inference_function(net, tta_level)
    probs = predict(serve, splits.x_test)
    test = metrics_of(probs, splits.y_test, splits.class_names)
    log.info("test: accuracy %.4f, loss %.4f on %d held-out images", test.accuracy, test.loss, test.size)
    if test.accuracy < gates.min_accuracy:
        raise QualityGateError(
            f"test accuracy {test.accuracy:.4f} is below --min-accuracy {gates.min_accuracy}; "
            "nothing was published (train longer, or lower the gate)"
        )
    compared = None
    if baseline:
        from job.report.baseline import gate

        compared = gate(baseline, test.accuracy, gates.max_regression)
        log.info("baseline: %+.4f against %s (%.4f)", compared["delta"], baseline.uri, baseline.test_accuracy)
    return Evaluated(serve, probs, test, compared)


def export(record: RunRecord, trained: Trained, evaluated: Evaluated, splits: Splits, run_dir: Path) -> None:
    """model.keras, the SavedModel (where the layout serves it from) and model.onnx with the contract's metadata."""
    from job.export.bundle import export_model

    export_model(
        trained.net,
        evaluated.serve,
        run_dir,
        class_names=splits.class_names,
        run_id=record.run_id,
        preset=record.preset,
        test_accuracy=evaluated.test.accuracy,
        tta_level=record.tta_level,
        versions=versions(),
        savedmodel_dir=savedmodel_dir(record.layout),
    )


def verify(
    evaluated: Evaluated, splits: Splits, run_dir: Path, gates: GateConfig, *, seed: int, threads: int, layout: str
) -> Parity:
    from job.export import gate

    parity = gate.verify(
        run_dir,
        evaluated.serve,
        splits.x_test,
        splits.y_test,
        evaluated.probs,
        seed=seed,
        threads=threads,
        tolerance=gates.parity_tolerance,
        savedmodel_dir=savedmodel_dir(layout),
    )
    log.info(
        "parity: onnxruntime max|dprob| %.2e, savedmodel max|dprob| %.2e, onnx test accuracy %.4f",
        parity.onnxruntime.max_abs_diff,
        parity.savedmodel.max_abs_diff,
        parity.onnx_test_accuracy,
    )
    return parity


def quantize(parity: Parity, splits: Splits, run_dir: Path, gates: GateConfig, *, seed: int, threads: int) -> dict:
    """metrics.json's "int8": the portable file's record, with the VNNI file's under "vnni" when asked for."""
    from job.export import gate

    def variant(name: str) -> dict:
        return gate.quantize(
            run_dir,
            splits.x_train,
            splits.x_test,
            splits.y_test,
            parity.onnx_test_probs,
            seed=seed,
            threads=threads,
            max_drop=gates.int8_max_drop,
            variant=name,
        )

    int8 = variant("portable")
    log.info(
        "int8: test accuracy %.4f (drop %.4f), argmax agreement with float %.4f, %s",
        int8["test_accuracy"],
        int8["accuracy_drop"],
        int8["argmax_agreement"],
        "published" if int8["published"] else "not published: " + int8["reason"],
    )
    return {**int8, "vnni": variant("vnni")} if gates.int8_vnni else int8


def report(run_dir: Path, record: RunRecord, platform_name: str, splits: Splits, made: tuple) -> dict:
    """The report files and the content of metrics.json (the pipeline adds the stage durations and writes it).
    `made`: the (Trained, Evaluated, Parity, int8 record or None, threads) of the stages before."""
    from job.report.files import RunResults, write_report

    trained, evaluated, parity, int8, threads = made
    results = RunResults(
        platform=platform_name,
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
    return write_report(run_dir, record, results)


def publish(
    run_dir: Path, record: RunRecord, platform, ends: Ends, metrics: dict, splits: Splits, cache_dir: str
) -> dict:
    """Seal the folder (provenance, signature, manifest), log it to MLflow, publish it all or nothing."""
    from job.report.release import publish as publish_folder
    from job.report.release import seal, summary_of

    store, tracker = ends.store, ends.tracker
    seal(run_dir, record, platform, splits.info, ends.signer, store.uri, cache_dir)
    mlflow = tracker.finish(run_dir, metrics, splits.x_test[:2]) if tracker else None
    summary = summary_of(metrics, record.run_id, store.uri)
    published = publish_folder(run_dir, record.run_id, store, summary, cache_dir)
    if tracker:
        tracker.close()
    return {**published, **({"mlflow": mlflow} if mlflow else {})}

"""The run's stages after the data: train -> evaluate -> export -> verify -> (quantize). Each is one call that
takes what it uses and returns what it made (a frozen dataclass, or nothing for export, whose product is files);
none changes its arguments. job.pipeline strings them together inside their timers, and the report stage
(job.report.files) describes their results.

TensorFlow is imported inside the calls: importing this module costs nothing.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from job.config import Config
from job.data.dataset import Splits
from job.errors import QualityGateError
from job.export.parity import Parity
from job.report.metrics import HoldoutMetrics
from job.runtime.telemetry import versions
from job.storage.pointer import utc_now
from job.storage.runs import savedmodel_dir

if TYPE_CHECKING:
    import keras

log = logging.getLogger("job")


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


def train(cfg: Config, splits: Splits, checkpoints=None, strategy=None) -> Trained:
    from job.train.build import inference_copy
    from job.train.loop import train as train_loop
    from job.train.model import Architecture

    result = train_loop(cfg, splits, checkpoints, strategy=strategy)
    return Trained(
        net=inference_copy(result.model, Architecture.of(cfg), splits.num_classes),
        history=list(result.history),
        seconds=result.seconds,
        optimizer_steps=int(result.model.optimizer.iterations.numpy()),
        resumed_from=result.resumed_from,
        finished_at=utc_now(),
    )


def evaluate(
    net, splits: Splits, *, tta_level: int, min_accuracy: float, baseline=None, max_regression: float = 0.0
) -> Evaluated:
    """Test metrics of the model as exported (TTA included); raises QualityGateError (exit 6) below
    `min_accuracy` or more than `max_regression` below the baseline."""
    from job.export.inference import inference_function, predict
    from job.report.metrics import evaluate as metrics_of

    serve = inference_function(net, tta_level)
    probs = predict(serve, splits.x_test)
    test = metrics_of(probs, splits.y_test, splits.class_names)
    log.info("test: accuracy %.4f, loss %.4f on %d held-out images", test.accuracy, test.loss, test.size)
    if test.accuracy < min_accuracy:
        raise QualityGateError(
            f"test accuracy {test.accuracy:.4f} is below --min-accuracy {min_accuracy}; "
            "nothing was published (train longer, or lower the gate)"
        )
    compared = None
    if baseline:
        from job.report.baseline import gate

        compared = gate(baseline, test.accuracy, max_regression)
        log.info("baseline: %+.4f against %s (%.4f)", compared["delta"], baseline.uri, baseline.test_accuracy)
    return Evaluated(serve, probs, test, compared)


def export(cfg: Config, trained: Trained, evaluated: Evaluated, splits: Splits, run_dir: Path) -> None:
    """model.keras, the SavedModel (where cfg.layout serves it from) and model.onnx with the contract's metadata."""
    from job.export.bundle import export_model

    export_model(
        trained.net,
        evaluated.serve,
        run_dir,
        class_names=splits.class_names,
        run_id=cfg.run_id,
        preset=cfg.preset,
        test_accuracy=evaluated.test.accuracy,
        tta_level=cfg.tta_level,
        versions=versions(),
        savedmodel_dir=savedmodel_dir(cfg.layout),
    )


def verify(cfg: Config, evaluated: Evaluated, splits: Splits, run_dir: Path) -> Parity:
    from job.export import gate

    parity = gate.verify(
        run_dir,
        evaluated.serve,
        splits.x_test,
        splits.y_test,
        evaluated.probs,
        seed=cfg.seed,
        threads=cfg.threads,
        tolerance=cfg.parity_tolerance,
        savedmodel_dir=savedmodel_dir(cfg.layout),
    )
    log.info(
        "parity: onnxruntime max|dprob| %.2e, savedmodel max|dprob| %.2e, onnx test accuracy %.4f",
        parity.onnxruntime.max_abs_diff,
        parity.savedmodel.max_abs_diff,
        parity.onnx_test_accuracy,
    )
    return parity


def quantize(cfg: Config, parity: Parity, splits: Splits, run_dir: Path) -> dict:
    """metrics.json's "int8": the portable file's record, with the VNNI file's under "vnni" when asked for."""
    from job.export import gate

    def variant(name: str) -> dict:
        return gate.quantize(
            run_dir,
            splits.x_train,
            splits.x_test,
            splits.y_test,
            parity.onnx_test_probs,
            seed=cfg.seed,
            threads=cfg.threads,
            max_drop=cfg.int8_max_drop,
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
    return {**int8, "vnni": variant("vnni")} if cfg.int8_vnni else int8

"""The one config object of a run, and how it is resolved.

Every field has a default. Layers override them in this order, each later one winning:

    defaults < preset < --config FILE < platform (SageMaker / Vertex AI / AWS Batch conventions)
             < SageMaker hyperparameters < environment (JOB_<FIELD>, MLFLOW_TRACKING_URI) < command-line flags

The resolved config, with the layer that set each field, is logged and saved as `config.json`
next to the artifacts. This module imports no TensorFlow: `--help` and config errors stay instant.
"""

import dataclasses
import json
import math
import os
import re
import secrets
import time
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from job.errors import ConfigError
from job.presets import PRESETS
from job.runtime.redact import redact_value

ENV_PREFIX = "JOB_"
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _f(default, help, *, choices=None, group="train", metavar=None):
    return field(default=default, metadata={"help": help, "choices": choices, "group": group, "metavar": metavar})


@dataclass
class Config:
    # --- data
    data: str = _f(
        "auto",
        "data source: 'auto', 'keras', a cifar-10-python.tar.gz / cifar-10-batches-py folder, "
        "an image-folder tree (folder, .tar or .tar.gz), or an s3:// URI of one of those. "
        "'auto' = ../shared/data/cifar10-jpeg-train.tar.gz if present, else 'keras'",
        group="data",
        metavar="SOURCE",
    )
    limit: int = _f(0, "use a stratified subsample of N images (0 = all); for smoke runs", group="data", metavar="N")
    val_fraction: float = _f(0.1, "validation split carved from train (stratified), for the curves", group="data")
    test_fraction: float = _f(0.1, "test holdout carved when the source has no test split (stratified)", group="data")
    cache_dir: str = _f(
        "", "decoded-data and download cache (default $XDG_CACHE_HOME/cifar10-job)", group="data", metavar="DIR"
    )
    # --- model and training
    preset: str = _f(
        "seed",
        "named set of defaults: 'seed' (the reference recipe), 'fast' (89%% in under "
        "10 minutes on 2 AMX cores, 42 minutes on 2 AVX2 cores), 'fast-long' (longer schedule) or "
        "'fast-short' (one epoch)",
        choices=("seed", "fast", "fast-long", "fast-short"),
    )
    model: str = _f("seed_cnn", "network architecture", choices=("seed_cnn", "fast_net"))
    epochs: int = _f(10, "training epochs")
    batch_size: int = _f(64, "training batch size")
    optimizer: str = _f("adam", "optimizer", choices=("adam", "sgd"))
    learning_rate: float = _f(1e-3, "peak learning rate")
    momentum: float = _f(0.9, "SGD (Nesterov) momentum")
    weight_decay: float = _f(0.0, "sgd: L2 penalty added to the gradient; adam: decoupled weight decay")
    bias_lr_scale: float = _f(1.0, "sgd: learning-rate multiplier for BatchNorm biases")
    lookahead_every: int = _f(
        0,
        "sgd: every N steps pull the weights to a slow moving average of themselves "
        "(lookahead, as in airbench); 0 = off",
    )
    stem_bias_epochs: int = _f(0, "fast_net: epochs in which the whitening layer's bias learns (its kernel never does)")
    label_smoothing: float = _f(0.0, "label smoothing of the one-hot targets")
    augment: bool = _f(False, "random crop (reflect padding) + horizontal flip in the tf.data pipeline")
    crop_padding: int = _f(4, "padding in pixels for the random-crop augmentation (maximum shift)")
    tta_level: int = _f(
        0,
        "test-time augmentation folded into the exported model, airbench's levels: 0 none, 1 mirror (2x the "
        "inference cost), 2 mirror + the mirrored pair shifted one pixel each way (6x); recorded in the model's "
        "metadata and card",
        choices=(0, 1, 2),
        metavar="{0,1,2}",
    )
    width: int = _f(64, "base channel width of fast_net")
    bn_momentum: float = _f(
        0.6, "fast_net: BatchNorm running-statistics momentum, Keras' sense (the weight of the old average)"
    )
    activation: str = _f(
        "relu", "fast_net: activation (gelu = its tanh form, which ONNX exports)", choices=("relu", "gelu")
    )
    drop_last: bool = _f(False, "drop each epoch's last partial batch (airbench does)")
    precision: str = _f(
        "float32",
        "training precision: 'auto' = mixed_bfloat16 where the CPU has AMX bf16 units, else "
        "float32 (bf16 without them is emulated and about 12x slower); the exports are always "
        "float32",
        choices=("auto", "float32", "mixed_bfloat16"),
    )
    seed: int = _f(42, "random seed for splits, shuffling and initialisation")
    deterministic: bool = _f(True, "enable TensorFlow op determinism (slightly slower)")
    threads: int = _f(0, "TensorFlow intra-op / ONNX Runtime threads (0 = CPUs this process may use)", group="runtime")
    inter_op_threads: int = _f(0, "TensorFlow inter-op threads (0 = automatic)", group="runtime")
    checkpoint_dir: str = _f(
        "",
        "save a checkpoint each epoch and on SIGTERM; resume from it when the run id matches (local folder or s3://)",
        group="runtime",
        metavar="DIR",
    )
    log_dir: str = _f("", "write TensorBoard logs here", group="runtime", metavar="DIR")
    # --- gates and export
    min_accuracy: float = _f(
        0.0, "quality gate: fail (exit 6) if Keras test accuracy is below this (0..1)", group="gates"
    )
    baseline: str = _f(
        "",
        "regression gate: a run folder or store (its latest.json), local or s3://, whose metrics.json this run must "
        "not fall below by more than --max-regression (exit 6); refused (exit 2) unless both used the same test split",
        group="gates",
        metavar="STORE_OR_RUN",
    )
    max_regression: float = _f(
        0.005, "regression gate: allowed test-accuracy drop below --baseline (0.005 = half a point)", group="gates"
    )
    parity_tolerance: float = _f(
        1e-4,
        "verification gate: max |prob difference| allowed between Keras, SavedModel and ONNX Runtime",
        group="gates",
    )
    int8: bool = _f(False, "also export model.int8.onnx (ONNX Runtime static QDQ quantization)", group="gates")
    int8_vnni: bool = _f(
        False,
        "with --int8, also publish model.int8-vnni.onnx (8-bit weights) for CPUs with VNNI, where this CPU can check "
        "it; measured no faster than the portable 7-bit model on an AVX-512 + VNNI EPYC with ONNX Runtime 1.32 "
        "(both 2.4-3.1x float), hence off",
        group="gates",
    )
    int8_max_drop: float = _f(
        0.01, "publish model.int8.onnx only if its test accuracy is within this of float", group="gates"
    )
    # --- publish
    out: str = _f("artifacts", "artifact store: a local folder or s3://bucket/prefix", group="publish", metavar="STORE")
    mlflow: str = _f(
        "",
        "MLflow tracking server URI (default: MLFLOW_TRACKING_URI); the run's params, per-epoch and test metrics, "
        "artifacts and ONNX model are logged there (needs the `mlflow` extra)",
        group="publish",
        metavar="URI",
    )
    mlflow_experiment: str = _f("cifar10-job", "MLflow experiment name", group="publish", metavar="NAME")
    mlflow_model_name: str = _f(
        "", "register the ONNX model in the MLflow model registry under this name", group="publish", metavar="NAME"
    )
    layout: str = _f(
        "runs",
        "how the store is laid out: 'runs' = <out>/<run-id>/ + latest.json; 'sagemaker' / 'vertex' = the run flat in "
        "<out> (a platform's model directory), the SavedModel where that platform serves it from (1/ or the top)",
        choices=("runs", "sagemaker", "vertex"),
        group="publish",
    )
    run_id: str = _f("", "run name under the store (default: UTC time + preset + random suffix)", group="publish")
    s3_endpoint: str = _f(
        "", "S3 endpoint URL (default: AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL / AWS)", group="publish", metavar="URL"
    )
    s3_region: str = _f("", "S3 region (default: AWS_REGION / AWS_DEFAULT_REGION / us-east-1)", group="publish")
    s3_path_style: bool = _f(False, "path-style S3 addressing (MinIO, Ceph and most on-prem stores)", group="publish")
    s3_retries: int = _f(5, "S3 attempts per request (botocore standard retry mode)", group="publish")
    s3_timeout: float = _f(20.0, "S3 connect/read timeout in seconds", group="publish")

    # Not settable: filled in by resolve() for the record.
    sources: dict = field(default_factory=dict, metadata={"internal": True})

    def to_dict(self) -> dict:
        """The settings as people and files see them (config.json, --print-config, MLflow params, the config
        line): URI passwords and tokens redacted. The job itself reads the attributes."""
        return redact_value(dataclasses.asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"


def settable_fields() -> list[dataclasses.Field]:
    return [f for f in fields(Config) if not f.metadata.get("internal")]


FIELD_NAMES = {f.name for f in settable_fields()}
# The real annotated types (bool, int, float, str), read from the class, not from annotation strings.
TYPES: dict[str, type] = {name: hint for name, hint in typing.get_type_hints(Config).items() if name in FIELD_NAMES}


def parse_value(name: str, raw: Any, source: str) -> Any:
    """Convert a raw (usually string) value to the field's type, or raise ConfigError naming the source.
    Floats must be finite: a NaN learning rate would train to the end and fail only at the parity gate."""
    kind = TYPES[name]
    try:
        if isinstance(raw, str):
            raw = raw.strip()
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError("expected true/false")
        if isinstance(raw, (dict, list)) or (kind is not str and isinstance(raw, bool)):
            raise TypeError(f"a JSON {type(raw).__name__} is not a {kind.__name__}")
        if kind is int:
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError("expected an integer")
            return int(raw)
        if kind is float:
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError("must be a finite number")
            return value
        return str(raw)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConfigError(f"{source}: invalid value {raw!r} for {name} ({exc}); expected {kind.__name__}") from None


def env_layer(env: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    """JOB_EPOCHS=3 -> {'epochs': ('3', 'env JOB_EPOCHS')}. Unknown JOB_* names are an error (typos)."""
    layer = {}
    if env.get("MLFLOW_TRACKING_URI"):  # MLflow's own variable; JOB_MLFLOW (below) wins over it
        layer["mlflow"] = (env["MLFLOW_TRACKING_URI"], "env MLFLOW_TRACKING_URI")
    known_other = {"JOB_OPT_ML", "JOB_COMPLETION_INDEX"}  # read by job.runtime (the second is Kubernetes')
    for key, value in env.items():
        if not key.startswith(ENV_PREFIX) or key in known_other:
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name not in FIELD_NAMES:
            raise ConfigError(
                f"environment variable {key} is not a known setting; "
                f"see 'python -m job train --help' for the JOB_* names"
            )
        layer[name] = (value, f"env {key}")
    return layer


def hyperparameter_layer(hyperparameters: Mapping[str, Any]) -> dict[str, tuple[Any, str]]:
    """SageMaker passes every hyperparameter as a string, sometimes JSON-quoted; names may use dashes."""
    layer = {}
    for key, value in hyperparameters.items():
        name = key.replace("-", "_").lower()
        if name not in FIELD_NAMES:
            raise ConfigError(f"SageMaker hyperparameter {key!r} is not a known setting")
        if isinstance(value, str):
            try:
                decoded = json.loads(value)
                if isinstance(decoded, (str, int, float, bool)):
                    value = decoded
            except ValueError:
                pass
        layer[name] = (value, f"hyperparameter {key}")
    return layer


def file_layer(path: str) -> dict[str, tuple[Any, str]]:
    """`--config FILE`: a run's own config.json (or any JSON object of settings) re-runs it. Its run id is left
    out (a re-run is a new run) and so is the record of sources; flags and the environment still override."""
    try:
        with open(path) as fh:
            values = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--config {path}: not a readable JSON file ({exc})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"--config {path}: expected a JSON object of settings, found a {type(values).__name__}")
    if {"tta", "tta_translate"} & set(values):  # a config.json from before tta_level: the same model
        tta, translate = values.pop("tta", False), values.pop("tta_translate", False)
        values.setdefault("tta_level", (2 if translate else 1) if tta else 0)
    unknown = sorted(set(values) - FIELD_NAMES - {"sources", "run_id"})
    if unknown:
        raise ConfigError(f"--config {path}: unknown setting(s) {', '.join(unknown)}")
    return {k: (v, f"config file {path}") for k, v in values.items() if k in FIELD_NAMES and k != "run_id"}


def resolve(
    cli: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
    platform_defaults: Mapping[str, Any] | None = None,
    config_file: str | None = None,
) -> Config:
    """Merge all layers into one validated Config:
    defaults < preset < --config file < platform < hyperparameters < environment < flags."""
    env = os.environ if env is None else env
    layers: list[tuple[str, dict[str, tuple[Any, str]]]] = [
        ("file", file_layer(config_file) if config_file else {}),
        ("platform", {k: (v, "platform") for k, v in (platform_defaults or {}).items()}),
        ("hyperparameters", hyperparameter_layer(hyperparameters or {})),
        ("env", env_layer(env)),
        ("cli", {k: (v, f"--{k.replace('_', '-')}") for k, v in (cli or {}).items() if v is not None}),
    ]
    values: dict[str, Any] = {f.name: f.default for f in settable_fields()}
    sources: dict[str, str] = {name: "default" for name in values}

    preset = "seed"
    for _, layer in layers:
        if "preset" in layer:
            raw, src = layer["preset"]
            preset = parse_value("preset", raw, src)
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    for name, value in PRESETS[preset].items():
        values[name] = value
        sources[name] = f"preset {preset}"

    for _, layer in layers:
        for name, (raw, src) in layer.items():
            values[name] = parse_value(name, raw, src)
            sources[name] = src
    values["preset"] = preset
    if values["precision"] == "auto":  # resolved here, on the machine that trains, and recorded with its reason
        from job.runtime.resources import auto_precision

        values["precision"], why = auto_precision()
        sources["precision"] = f"{sources['precision']} (auto: {why})"

    cfg = Config(**values, sources=sources)
    if not cfg.run_id:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        cfg.run_id = f"{stamp}-{cfg.preset}-{secrets.token_hex(2)}"
        cfg.sources["run_id"] = "generated"
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    def bad(name: str, why: str):
        raise ConfigError(f"{name} = {getattr(cfg, name)!r} ({cfg.sources.get(name, 'default')}): {why}")

    for f in settable_fields():
        choices = f.metadata.get("choices")
        if choices and getattr(cfg, f.name) not in choices:
            bad(f.name, f"must be one of {', '.join(choices)}")
    if cfg.epochs < 1:
        bad("epochs", "must be at least 1")
    if cfg.batch_size < 1:
        bad("batch_size", "must be at least 1")
    if cfg.limit < 0:
        bad("limit", "must be 0 (all) or a positive number of images")
    if not 0.0 <= cfg.val_fraction < 0.5:
        bad("val_fraction", "must be 0 (no validation split: curves from training metrics) or below 0.5")
    if not 0.0 <= cfg.bn_momentum < 1.0:
        bad("bn_momentum", "must be in [0, 1)")
    if not 0.0 < cfg.test_fraction < 0.5:
        bad("test_fraction", "must be between 0 and 0.5")
    if not 0.0 <= cfg.min_accuracy <= 1.0:
        bad("min_accuracy", "is a fraction between 0 and 1 (e.g. 0.65)")
    if not 0.0 <= cfg.max_regression <= 1.0:
        bad("max_regression", "is a fraction of accuracy between 0 and 1 (0.005 = half a point)")
    if not 0.0 < cfg.parity_tolerance < 1.0:
        bad("parity_tolerance", "must be between 0 and 1")
    if cfg.learning_rate <= 0:
        bad("learning_rate", "must be positive")
    if not 0.0 <= cfg.momentum < 1.0:
        bad("momentum", "must be in [0, 1)")
    if cfg.weight_decay < 0:
        bad("weight_decay", "must be 0 or positive")
    if cfg.bias_lr_scale <= 0:
        bad("bias_lr_scale", "must be positive (1 = the same learning rate as the other weights)")
    if cfg.lookahead_every < 0:
        bad("lookahead_every", "must be 0 (off) or a number of steps")
    if cfg.stem_bias_epochs < 0:
        bad("stem_bias_epochs", "must be 0 or more")
    if not 0 <= cfg.crop_padding <= 16:
        bad("crop_padding", "must be between 0 (no crop) and 16 pixels")
    if not 0.0 <= cfg.label_smoothing < 1.0:
        bad("label_smoothing", "must be in [0, 1)")
    if not 0.0 <= cfg.int8_max_drop <= 1.0:
        bad("int8_max_drop", "is a fraction of accuracy between 0 and 1 (0.01 = one point)")
    if cfg.width < 8:
        bad("width", "must be at least 8")
    for name in ("threads", "inter_op_threads"):
        if getattr(cfg, name) < 0:
            bad(name, "must be 0 (automatic) or positive")
    if cfg.s3_retries < 1:
        bad("s3_retries", "must be at least 1 (one attempt, no retry)")
    if cfg.s3_timeout <= 0:
        bad("s3_timeout", "must be a positive number of seconds")
    if not RUN_ID_PATTERN.match(cfg.run_id):
        bad("run_id", "use letters, digits, '.', '_' and '-' only (at most 128 characters)")
    if cfg.layout != "runs" and cfg.out.startswith("s3://"):
        bad("layout", "the flat platform layouts write into a local model directory; use --layout runs for s3://")
    if not cfg.out.strip():
        bad("out", "is empty; name a folder or s3://bucket/prefix")
    for name in ("out", "data", "checkpoint_dir", "baseline"):
        value = getattr(cfg, name)
        if value.startswith("s3://") and "/" in value[5:].strip("/"):
            from job.runtime.names import UnsafeName, confine

            try:
                confine(value[5:].strip("/").partition("/")[2], f"the key prefix of {value}")
            except UnsafeName as exc:
                bad(name, str(exc))
        if "://" in value and not value.startswith("s3://"):
            bad(
                name,
                "unsupported URI scheme; use a local path or s3://bucket/prefix (gs:// buckets: use the "
                "/gcs/ mount on Vertex AI)",
            )
        if value.startswith("s3://") and len(value.rstrip("/")) <= len("s3://"):
            bad(name, "an s3:// URI needs a bucket: s3://bucket/prefix")

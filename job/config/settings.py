"""Every setting of a run: its type, default, help, group and the check its value must pass. Declarations only;
job.config.resolve merges the layers that set them."""

import dataclasses
import re
import typing
from dataclasses import dataclass, field, fields

from job.config import parts
from job.config.checks import MOMENTUM, NOT_NEGATIVE, POSITIVE
from job.config.checks import within as _within
from job.presets import PRESETS
from job.runtime.redact import redact_value

ENV_PREFIX = "JOB_"
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _f(default, help, *, choices=None, group="train", metavar=None, check=None):
    """A setting. `check`: (predicate on the value, what the value must be), tested by validate()."""
    metadata = {"help": help, "choices": choices, "group": group, "metavar": metavar, "check": check}
    return field(default=default, metadata=metadata)


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
    limit: int = _f(
        0,
        "use a stratified subsample of N images (0 = all); for smoke runs",
        group="data",
        metavar="N",
        check=_within(0, None, "must be 0 (all) or a positive number of images"),
    )
    val_fraction: float = _f(
        0.1,
        "validation split carved from train (stratified), for the curves; 0 = none (curves from training metrics)",
        group="data",
        check=_within(0.0, 0.5, "must be 0 (no validation split) or below 0.5", high_open=True),
    )
    test_fraction: float = _f(
        0.1,
        "test holdout carved when the source has no test split (stratified)",
        group="data",
        check=_within(0.0, 0.5, "must be between 0 and 0.5", low_open=True, high_open=True),
    )
    cache_dir: str = _f(
        "", "decoded-data and download cache (default $XDG_CACHE_HOME/cifar10-job)", group="data", metavar="DIR"
    )
    # --- model and training
    preset: str = _f(
        "seed",
        "named set of defaults (job/presets.py; their measured speed and accuracy: docs/performance.md): 'seed' (the "
        "reference recipe), 'fast' (the tuned recipe), 'fast-long' (its longer schedule), 'fast-short' (one epoch)",
        choices=tuple(PRESETS),
    )
    model: str = _f("seed_cnn", "network architecture", choices=("seed_cnn", "fast_net"))
    epochs: int = _f(10, "training epochs", check=_within(1, 10_000, "must be between 1 and 10000"))
    batch_size: int = _f(64, "training batch size", check=_within(1, 65_536, "must be between 1 and 65536"))
    optimizer: str = _f("adam", "optimizer", choices=("adam", "sgd"))
    learning_rate: float = _f(1e-3, "peak learning rate", check=POSITIVE)
    momentum: float = _f(0.9, "SGD (Nesterov) momentum", check=MOMENTUM)
    weight_decay: float = _f(
        0.0, "sgd: L2 penalty added to the gradient; adam: decoupled weight decay", check=NOT_NEGATIVE
    )
    bias_lr_scale: float = _f(1.0, "sgd: learning-rate multiplier for BatchNorm biases", check=POSITIVE)
    lookahead_every: int = _f(
        0,
        "sgd: every N steps pull the weights to a slow moving average of themselves "
        "(lookahead, as in airbench); 0 = off",
        check=NOT_NEGATIVE,
    )
    lookahead_bn_stats: bool = _f(True, "sgd, with --lookahead-every: average the BatchNorm running statistics too")
    stem_bias_epochs: int = _f(
        0, "fast_net: epochs in which the whitening layer's bias learns (its kernel never does)", check=NOT_NEGATIVE
    )
    label_smoothing: float = _f(0.0, "label smoothing of the one-hot targets", check=MOMENTUM)
    augment: bool = _f(False, "random crop (reflect padding) + horizontal flip in the tf.data pipeline")
    crop_padding: int = _f(
        4,
        "padding in pixels for the random-crop augmentation (maximum shift)",
        check=_within(0, 16, "must be between 0 (no crop) and 16 pixels"),
    )
    tta_level: int = _f(
        0,
        "test-time augmentation folded into the exported model, airbench's levels: 0 none, 1 mirror (2x the "
        "inference cost), 2 mirror + the mirrored pair shifted one pixel each way (6x); recorded in the model's "
        "metadata and card",
        choices=(0, 1, 2),
        metavar="{0,1,2}",
    )
    width: int = _f(64, "base channel width of fast_net", check=_within(8, 1024, "must be between 8 and 1024"))
    bn_momentum: float = _f(
        0.6,
        "fast_net: BatchNorm running-statistics momentum, Keras' sense (the weight of the old average)",
        check=MOMENTUM,
    )
    activation: str = _f(
        "relu", "fast_net: activation (gelu = its tanh form, which ONNX exports)", choices=("relu", "gelu")
    )
    train_layers: str = _f(
        "stock",
        "fast_net's layers while training: 'fused' = BatchNorm as one op in the compute dtype and GELU as one "
        "compiled loop each way (the same functions, faster); the published model has stock Keras layers either way",
        choices=("stock", "fused"),
    )
    drop_last: bool = _f(False, "drop each epoch's last partial batch (airbench does)")
    precision: str = _f(
        "float32",
        "training precision: 'auto' = mixed_bfloat16 on GPUs with bf16 tensor cores (compute capability >= 8.0) "
        "or a CPU with bf16 units (AMX or AVX512_BF16), else float32 (bf16 without them is emulated and about 12x "
        "slower); the exports are always float32",
        choices=("auto", "float32", "mixed_bfloat16"),
    )
    seed: int = _f(42, "random seed for splits, shuffling and initialisation")
    deterministic: bool = _f(True, "enable TensorFlow op determinism (slightly slower)")
    threads: int = _f(
        0,
        "TensorFlow intra-op / ONNX Runtime threads (0 = CPUs this process may use)",
        group="runtime",
        check=_within(0, 1024, "must be 0 (automatic) or at most 1024"),
    )
    inter_op_threads: int = _f(
        0,
        "TensorFlow inter-op threads (0 = automatic)",
        group="runtime",
        check=_within(0, 1024, "must be 0 (automatic) or at most 1024"),
    )
    checkpoint_dir: str = _f(
        "",
        "save a checkpoint each epoch and on SIGTERM; resume from it when the run id matches (local folder or s3://)",
        group="runtime",
        metavar="DIR",
    )
    log_dir: str = _f("", "write TensorBoard logs here", group="runtime", metavar="DIR")
    # --- gates and export
    min_accuracy: float = _f(
        0.0,
        "quality gate: fail (exit 6) if Keras test accuracy is below this (0..1)",
        group="gates",
        check=_within(0.0, 1.0, "is a fraction between 0 and 1 (e.g. 0.65)"),
    )
    baseline: str = _f(
        "",
        "regression gate: a run folder or store (its latest.json), local or s3://, whose metrics.json this run must "
        "not fall below by more than --max-regression (exit 6); refused (exit 2) unless both used the same test split",
        group="gates",
        metavar="STORE_OR_RUN",
    )
    max_regression: float = _f(
        0.005,
        "regression gate: allowed test-accuracy drop below --baseline (0.005 = half a point)",
        group="gates",
        check=_within(0.0, 1.0, "is a fraction of accuracy between 0 and 1 (0.005 = half a point)"),
    )
    parity_tolerance: float = _f(
        1e-4,
        "verification gate: max |prob difference| allowed between Keras, SavedModel and ONNX Runtime",
        group="gates",
        check=_within(0.0, 1.0, "must be between 0 and 1", low_open=True, high_open=True),
    )
    public_key: str = _f(
        "",
        "with --baseline: require the baseline run signed by this public key (PEM) (exit 3 otherwise); "
        "default JOB_TRUSTED_KEY",
        group="gates",
        metavar="PEM",
    )
    trust_certificate: str = _f(
        "",
        "with --baseline: require the baseline run signed with a certificate that chains to these CA certificates "
        "(PEM) and is valid now",
        group="gates",
        metavar="CHAIN",
    )
    int8: bool = _f(False, "also export model.int8.onnx (ONNX Runtime static QDQ quantization)", group="gates")
    int8_vnni: bool = _f(
        False,
        "with --int8, also publish model.int8-vnni.onnx (8-bit weights) for CPUs with VNNI, where this CPU can check "
        "it (off: measured no faster than the portable model, docs/performance.md)",
        group="gates",
    )
    int8_max_drop: float = _f(
        0.01,
        "publish model.int8.onnx only if its test accuracy is within this of float",
        group="gates",
        check=_within(0.0, 1.0, "is a fraction of accuracy between 0 and 1 (0.01 = one point)"),
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
    sign_key: str = _f(
        "",
        "sign the run: write model.sig (OpenSSF model-signing format) with this EC private key (PEM), over every "
        "file but manifest.json",
        group="publish",
        metavar="PEM",
    )
    sign_key_password_env: str = _f(
        "", "the environment variable holding --sign-key's password (an encrypted key)", group="publish", metavar="NAME"
    )
    sign_certificate: str = _f(
        "",
        "sign with a certificate: --sign-key's certificate (PEM), issued by your own CA; its chain in --sign-chain",
        group="publish",
        metavar="PEM",
    )
    sign_chain: str = _f(
        "", "the CA certificates (PEM) between --sign-certificate and your root", group="publish", metavar="PEM"
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
    s3_retries: int = _f(
        5,
        "S3 attempts per request (botocore standard retry mode)",
        group="publish",
        check=_within(1, 100, "must be between 1 (one attempt, no retry) and 100"),
    )
    s3_timeout: float = _f(
        20.0,
        "S3 connect/read timeout in seconds",
        group="publish",
        check=_within(0, 3600, "must be a positive number of seconds, at most 3600", low_open=True),
    )

    # Not settable: filled in by resolve() for the record.
    sources: dict = field(default_factory=dict, metadata={"internal": True})

    def to_dict(self) -> dict:
        """The settings as people and files see them (config.json, --print-config, MLflow params, the config
        line): URI passwords and tokens redacted. The job itself reads the attributes."""
        return redact_value(dataclasses.asdict(self))

    def to_json(self) -> str:
        return parts.settings_json(self.to_dict())

    # The pieces (job.config.parts): what each part of the job reads. Read-only attributes, not fields: config.json,
    # the flags and the layers stay as declared above, and a piece always shows the current values.
    dataset = parts.PieceOf(parts.DataConfig)  # cfg.data is the source setting (--data)
    arch = parts.PieceOf(parts.ModelConfig)  # cfg.model is the architecture's name (--model)
    optim = parts.PieceOf(parts.OptimConfig)
    inputs = parts.PieceOf(parts.InputSpec)
    training = parts.PieceOf(parts.TrainConfig)
    gates = parts.PieceOf(parts.GateConfig)
    publishing = parts.PieceOf(parts.PublishConfig)
    runtime = parts.PieceOf(parts.RuntimeConfig)
    record = parts.PieceOf(parts.RunRecord)


def settable_fields() -> list[dataclasses.Field]:
    return [f for f in fields(Config) if not f.metadata.get("internal")]


FIELD_NAMES = {f.name for f in settable_fields()}
# The real annotated types (bool, int, float, str), read from the class, not from annotation strings.
TYPES: dict[str, type] = {name: hint for name, hint in typing.get_type_hints(Config).items() if name in FIELD_NAMES}

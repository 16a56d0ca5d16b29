"""The pieces of a run's config: each what one part of the job reads, and nothing more.

`Config` (job.config.settings) stays the one declaration of every setting (help, check, group, flag, JOB_* name,
config.json with each value's source). The pieces are frozen views built from it, one accessor each:

    cfg.dataset     DataConfig     the data stage (cfg.data is the source string, as the flag --data)
    cfg.arch        ModelConfig    the network (`Architecture` in job.train.model)
    cfg.optim       OptimConfig    optimizer, schedule, loss and the step count they depend on
    cfg.inputs      InputSpec      the training input pipeline
    cfg.training    TrainConfig    all that training reads: the four above plus precision, run id, log dir
    cfg.gates       GateConfig     the quality, regression, parity and int8 gates, and the baseline's trust
    cfg.publishing  PublishConfig  store, layout, run id, MLflow, signing and the S3 options
    cfg.runtime     RuntimeConfig  threads, checkpoint and TensorBoard folders
    cfg.record      RunRecord      what the report, model card, provenance and MLflow say about the settings

A piece's field has its setting's name unless its metadata names the setting (`setting=`); a field whose type is
a piece is that piece; metadata `derive` computes a field from the whole Config (the S3 options). This module imports
nothing of the job: every layer may use the pieces.
"""

import json
from dataclasses import MISSING, dataclass, field, fields
from typing import Generic, TypeVar


def _setting(name: str, *, fingerprint: bool = True, default=MISSING):
    """A piece's field read from the setting `name`. `fingerprint=False`: a setting that does not change the
    weights it trains (the checkpoint fingerprint leaves it out)."""
    return field(default=default, metadata={"setting": name, "fingerprint": fingerprint})


P = TypeVar("P", bound="Piece")


class Piece:
    """Built from a Config (or anything with its attributes) by `of`."""

    @classmethod
    def of(cls, cfg):
        values = {}
        for f in fields(cls):
            if "derive" in f.metadata:
                values[f.name] = f.metadata["derive"](cfg)
            elif isinstance(f.type, type) and issubclass(f.type, Piece):
                values[f.name] = f.type.of(cfg)
            else:
                values[f.name] = getattr(cfg, f.metadata.get("setting", f.name))
        return cls(**values)

    def as_settings(self, *, fingerprint_only: bool = False) -> dict:
        """{setting name: value} of the settings this piece reads (nested pieces flattened)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Piece):
                out.update(value.as_settings(fingerprint_only=fingerprint_only))
            elif "derive" not in f.metadata and (f.metadata.get("fingerprint", True) or not fingerprint_only):
                out[f.metadata.get("setting", f.name)] = value
        return out


# Settings that shape the weights but were added after checkpoints existed, with the value those were trained
# with: a run at that value leaves the key out of its fingerprint, so such a checkpoint still resumes; any other
# value is a different configuration (exit 7).
LATER_SETTINGS: dict[str, object] = {"lookahead_bn_stats": True}


@dataclass(frozen=True)
class DataConfig(Piece):
    """load_splits: where the images come from and how they are split."""

    source: str = _setting("data", fingerprint=False)  # the content's sha256 is fingerprinted: a moved mount resumes
    limit: int = _setting("limit")
    val_fraction: float = _setting("val_fraction")
    test_fraction: float = _setting("test_fraction")
    cache_dir: str = _setting("cache_dir", fingerprint=False)  # where decoded arrays are kept changes none of them
    seed: int = _setting("seed")


@dataclass(frozen=True)
class ModelConfig(Piece):
    """What building a network needs (job.train.model.Architecture is this class)."""

    name: str = _setting("model", default="seed_cnn")
    width: int = _setting("width", default=64)
    bn_momentum: float = _setting("bn_momentum", default=0.6)
    activation: str = _setting("activation", default="relu")
    # How the training graph computes those layers (job.train.fast_layers), not what it computes: a checkpoint
    # resumes in the layers it was saved with, and its weights copy into the stock network either way.
    train_layers: str = _setting("train_layers", fingerprint=False, default="stock")


@dataclass(frozen=True)
class OptimConfig(Piece):
    """The optimizer, its schedule over the whole run (epochs x steps per epoch) and the loss."""

    optimizer: str
    learning_rate: float
    momentum: float
    weight_decay: float
    bias_lr_scale: float
    lookahead_every: int
    lookahead_bn_stats: bool
    stem_bias_epochs: int
    label_smoothing: float
    epochs: int
    batch_size: int
    drop_last: bool


@dataclass(frozen=True)
class InputSpec(Piece):
    """What the training input pipeline needs: batch order and augmentation depend only on these and the epoch."""

    seed: int
    augment: bool
    crop_padding: int
    drop_last: bool


@dataclass(frozen=True)
class TrainConfig(Piece):
    """Everything training reads. `fingerprint()` is what a checkpoint must have been trained with to resume."""

    data: DataConfig
    model: ModelConfig
    optim: OptimConfig
    inputs: InputSpec
    # Not fingerprinted: with `--precision auto` it follows the machine, and a preempted job may come back on
    # another node type; training resumes such a checkpoint in this machine's precision (float32 weights either way).
    precision: str = _setting("precision", fingerprint=False)
    deterministic: bool = _setting("deterministic", fingerprint=False)
    run_id: str = _setting("run_id", fingerprint=False)
    log_dir: str = _setting("log_dir", fingerprint=False)

    def fingerprint(self) -> dict:
        """{setting: value} of every setting that shapes the weights: the pieces' fields, by setting name (the keys
        of checkpoints written before the pieces existed, which therefore still resume)."""
        settings = self.as_settings(fingerprint_only=True)
        return {k: v for k, v in settings.items() if k not in LATER_SETTINGS or v != LATER_SETTINGS[k]}


@dataclass(frozen=True)
class TrustConfig(Piece):
    """What a signed baseline must be signed by (--public-key / --trust-certificate, else JOB_TRUSTED_KEY)."""

    public_key: str
    certificate: str = _setting("trust_certificate")


@dataclass(frozen=True)
class GateConfig(Piece):
    """The gates a run must pass before it is published (settings group "gates")."""

    min_accuracy: float
    baseline: str
    max_regression: float
    parity_tolerance: float
    trust: TrustConfig
    int8: bool
    int8_vnni: bool
    int8_max_drop: float


@dataclass(frozen=True)
class S3Options(Piece):
    """The S3 client's settings (job.storage.s3client.S3Options is this class)."""

    endpoint: str = _setting("s3_endpoint", default="")
    region: str = _setting("s3_region", default="")
    path_style: bool = _setting("s3_path_style", default=False)
    retries: int = _setting("s3_retries", default=5)
    timeout: float = _setting("s3_timeout", default=20.0)


def s3_options_of(cfg) -> S3Options | None:
    """The S3 settings, or None when nothing the run reads or writes is on S3 (boto3 then never loads)."""
    if not any(v.startswith("s3://") for v in (cfg.data, cfg.out, cfg.checkpoint_dir, cfg.baseline)):
        return None
    return S3Options.of(cfg)


@dataclass(frozen=True)
class SigningConfig(Piece):
    """--sign-key and its password variable, certificate and chain."""

    key: str = _setting("sign_key")
    key_password_env: str = _setting("sign_key_password_env")
    certificate: str = _setting("sign_certificate")
    chain: str = _setting("sign_chain")


@dataclass(frozen=True)
class TrackingConfig(Piece):
    """The MLflow server, experiment and registered model name ("" = off)."""

    uri: str = _setting("mlflow")
    experiment: str = _setting("mlflow_experiment")
    model_name: str = _setting("mlflow_model_name")


@dataclass(frozen=True)
class PublishConfig(Piece):
    """Where and how the run is published (settings group "publish"); `s3` serves every S3 location of the run."""

    out: str
    layout: str
    run_id: str
    tracking: TrackingConfig
    signing: SigningConfig
    s3: S3Options | None = field(metadata={"derive": s3_options_of})


@dataclass(frozen=True)
class RuntimeConfig(Piece):
    """How the process runs (settings group "runtime")."""

    threads: int
    inter_op_threads: int
    checkpoint_dir: str
    log_dir: str


@dataclass(frozen=True)
class RunRecord(Piece):
    """What the report, model card, provenance and MLflow say about a run's settings. `settings`: every setting
    as config.json holds it (secrets in URIs redacted, `sources` included)."""

    run_id: str
    preset: str
    layout: str
    tta_level: int
    precision: str
    model: ModelConfig
    optim: OptimConfig
    inputs: InputSpec
    settings: dict = field(metadata={"derive": lambda cfg: cfg.to_dict()})

    @property
    def params(self) -> dict:
        """The settings without their sources (provenance, MLflow params, the config log line)."""
        return {k: v for k, v in self.settings.items() if k != "sources"}

    def config_json(self) -> str:
        """config.json's text: every setting and the layer that set it (what `--config FILE` re-runs)."""
        return settings_json(self.settings)


def settings_json(settings: dict) -> str:
    return json.dumps(settings, indent=2, sort_keys=True) + "\n"


class PieceOf(Generic[P]):
    """A read-only attribute of Config: the piece built from the current values at each read."""

    def __init__(self, piece: type[P]):
        self.piece = piece

    def __get__(self, cfg, owner=None) -> P:
        return self if cfg is None else self.piece.of(cfg)  # type: ignore[return-value]


PIECES = (DataConfig, ModelConfig, OptimConfig, InputSpec, TrainConfig, GateConfig, PublishConfig, RuntimeConfig)

"""The layers that set a run's settings besides the presets: a --config file, SageMaker hyperparameters and the
environment, each value parsed to its field's type with the place it came from."""

import math
from collections.abc import Mapping
from typing import Any

from job.config.settings import ENV_PREFIX, FIELD_NAMES, TYPES
from job.errors import ConfigError
from job.gates.json_doc import load_json, read_json_file

MAX_FILE_BYTES = 1024 * 1024  # a run's config.json is about 3 KB
MAX_VALUE_BYTES = 64 * 1024  # one hyperparameter's value


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
                decoded = load_json(value, f"hyperparameter {key}", error=ConfigError, max_bytes=MAX_VALUE_BYTES)
                if isinstance(decoded, (str, int, float, bool)):
                    value = decoded
            except ConfigError:
                pass  # not JSON-quoted: the string itself, parsed below to the field's type
        layer[name] = (value, f"hyperparameter {key}")
    return layer


def file_layer(path: str) -> dict[str, tuple[Any, str]]:
    """`--config FILE`: a run's own config.json (or any JSON object of settings) re-runs it. Its run id is left
    out (a re-run is a new run) and so is the record of sources; flags and the environment still override."""
    values = read_json_file(
        path, f"--config {path}: not a readable JSON file", error=ConfigError, max_bytes=MAX_FILE_BYTES
    )
    if not isinstance(values, dict):
        raise ConfigError(f"--config {path}: expected a JSON object of settings, found a {type(values).__name__}")
    if {"tta", "tta_translate"} & set(values):  # a config.json from before tta_level: the same model
        tta, translate = values.pop("tta", False), values.pop("tta_translate", False)
        values.setdefault("tta_level", (2 if translate else 1) if tta else 0)
    unknown = sorted(set(values) - FIELD_NAMES - {"sources", "run_id"})
    if unknown:
        raise ConfigError(f"--config {path}: unknown setting(s) {', '.join(unknown)}")
    return {k: (v, f"config file {path}") for k, v in values.items() if k in FIELD_NAMES and k != "run_id"}

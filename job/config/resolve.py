"""resolve(): the layers merged, in order, into one validated Config that records where each value came from."""

import os
import secrets
import time
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

from job.config.layers import env_layer, file_layer, hyperparameter_layer, parse_value
from job.config.settings import RUN_ID_PATTERN, Config, settable_fields
from job.errors import ConfigError
from job.presets import PRESETS

URI_SETTINGS = ("out", "data", "checkpoint_dir", "baseline")  # checked in this order (the first bad one is named)


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


def resolve_settings(names, cli: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None):
    """Only the settings `names` (attributes of the result, with `sources`), from their defaults, the environment
    and the flags: what a command that starts no run reads (`job publish`), with the checks resolve() makes.
    Every JOB_* variable is still parsed, so a typo or a bad value there fails as it does in `job train`."""
    env = os.environ if env is None else env
    wanted = set(names)
    values: dict[str, Any] = {f.name: f.default for f in settable_fields() if f.name in wanted}
    sources = {name: "default" for name in values}
    flags = {k: (v, f"--{k.replace('_', '-')}") for k, v in (cli or {}).items() if v is not None}
    for layer in (env_layer(env), flags):
        for name, (raw, src) in layer.items():
            value = parse_value(name, raw, src)
            if name in wanted:
                values[name], sources[name] = value, src
    settings = SimpleNamespace(**values, sources=sources)
    _check(settings, wanted)
    return settings


def validate(cfg: Config) -> None:
    _check(cfg, {f.name for f in settable_fields()})


def _check(cfg, names: set[str]) -> None:
    """The checks of the settings `names` of `cfg` (a Config, or resolve_settings' answer)."""

    def bad(name: str, why: str):
        raise ConfigError(f"{name} = {getattr(cfg, name)!r} ({cfg.sources.get(name, 'default')}): {why}")

    for f in settable_fields():
        if f.name not in names:
            continue
        value, choices, check = getattr(cfg, f.name), f.metadata.get("choices"), f.metadata.get("check")
        if choices and value not in choices:
            bad(f.name, f"must be one of {', '.join(map(str, choices))}")
        if check and not check[0](value):
            bad(f.name, check[1])
    if "run_id" in names and not RUN_ID_PATTERN.match(cfg.run_id):
        bad("run_id", "use letters, digits, '.', '_' and '-' only (at most 128 characters)")
    if {"layout", "out"} <= names and cfg.layout != "runs" and cfg.out.startswith("s3://"):
        bad("layout", "the flat platform layouts write into a local model directory; use --layout runs for s3://")
    if "out" in names and not cfg.out.strip():
        bad("out", "is empty; name a folder or s3://bucket/prefix")
    for name in (n for n in URI_SETTINGS if n in names):
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

"""Property tests of the parsers of documents read from outside, each on real files through the real code: a run's
manifest.json, a store's latest.json, a baseline's metrics.json (`--baseline`), the `--config` file and SageMaker's
hyperparameters. Whatever the bytes, each returns its documented value or raises its one documented error (DataError:
exit 3, ConfigError: exit 2), never another exception, within a bounded time. No TensorFlow (the unit tier's blocker
applies here too)."""

import json
import os
import tempfile
import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from unit.conftest import _no_tensorflow  # noqa: F401 (the unit tier's TensorFlow blocker, autouse)

from job.config.layers import file_layer, hyperparameter_layer
from job.errors import ConfigError, DataError
from job.report.baseline import load_baseline
from job.storage import open_store
from job.storage.manifest import parse_manifest, write_manifest

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=2000,  # ms per example, file writes included
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
# Bytes a hostile store or file would hold: garbage, near-JSON, deep nesting, NaN, non-UTF-8.
NASTY = st.sampled_from(
    [b"[" * 100_000, b"[" * 5000 + b"]" * 5000, b'{"a": NaN}', b"\xff\xfe{}", b"", b"null", b"{" * 40, b'"x"']
)
RAW = st.binary(max_size=512) | NASTY | JSON_VALUES.map(lambda v: json.dumps(v).encode())


def _folder() -> Path:
    return Path(tempfile.mkdtemp(prefix="fuzz-", dir=os.environ.get("TMPDIR")))


# ------------------------------------------------------------------------------------------- manifest.json

PATHS = st.text(max_size=20) | st.sampled_from(["model.onnx", "../x", "/etc/passwd", "a\nb", "a//b", "manifest.json"])
ENTRY = st.fixed_dictionaries(
    {},
    optional={
        "path": PATHS | SCALARS,
        "bytes": st.integers(min_value=-5, max_value=2**40) | SCALARS,
        "sha256": st.sampled_from(["0" * 64, "f" * 64, "Z" * 64]) | SCALARS,
    },
)
MANIFESTS = st.fixed_dictionaries({}, optional={"run_id": SCALARS, "files": st.lists(ENTRY, max_size=5) | SCALARS})


@FUZZ
@given(RAW | MANIFESTS.map(lambda m: json.dumps(m).encode()))
def test_the_manifest_parser_returns_a_confined_manifest_or_a_data_error(raw):
    try:
        manifest = parse_manifest(raw, "run")
    except DataError as exc:
        assert "\n" not in str(exc) or "\n" in raw.decode("utf-8", "replace")  # names are escaped by the CLI's gate
        return
    for path, entry in manifest["files"].items():
        assert not path.startswith("/") and ".." not in path.split("/") and path != "manifest.json"
        assert isinstance(entry["bytes"], int) and 0 <= entry["bytes"] and len(entry["sha256"]) == 64


# ------------------------------------------------------------------------------------------- latest.json

POINTERS = st.fixed_dictionaries({}, optional={"run_id": PATHS | SCALARS, "finished_at": SCALARS})


@FUZZ
@given(RAW | POINTERS.map(lambda p: json.dumps(p).encode()))
def test_the_pointer_parser_returns_a_confined_run_id_or_a_data_error(raw):
    store_dir = _folder()
    (store_dir / "latest.json").write_bytes(raw)
    try:
        run = open_store(str(store_dir)).latest()
    except DataError:
        return
    assert isinstance(run, str) and run and "/" not in run and not run.startswith(".")
    assert not any(unicodedata.category(c) in ("Cc", "Cs") for c in run)  # no control, no lone surrogate


# ------------------------------------------------------------------------------------------- --baseline metrics.json

METRICS = st.fixed_dictionaries(
    {},
    optional={
        "test_accuracy": st.floats() | SCALARS,
        "data": st.fixed_dictionaries({}, optional={"test_fingerprint": SCALARS}) | SCALARS,
        "run_id": SCALARS,
    },
)


@FUZZ
@given(RAW | METRICS.map(lambda m: json.dumps(m).encode()))
def test_a_baseline_is_read_or_refused_with_a_data_error(raw):
    run = _folder()
    (run / "metrics.json").write_bytes(raw)
    write_manifest(run, "r1")
    try:
        baseline = load_baseline(str(run))
    except DataError as exc:
        assert str(exc).startswith("--baseline ")
        return
    assert 0.0 <= baseline.test_accuracy <= 1.0 and isinstance(baseline.test_fingerprint, str)


# ------------------------------------------------------------------------------------------- --config and hyperparameters


@FUZZ
@given(
    RAW
    | st.dictionaries(st.sampled_from(["epochs", "learning_rate", "preset", "seed", "tta"]), JSON_VALUES).map(
        lambda d: json.dumps(d).encode()
    )
)
def test_a_config_file_gives_settings_or_a_config_error(raw):
    path = _folder() / "config.json"
    path.write_bytes(raw)
    try:
        layer = file_layer(str(path))
    except ConfigError as exc:
        assert str(exc).startswith("--config ")
        return
    assert all(source == f"config file {path}" for _, source in layer.values())


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(["epochs", "learning-rate", "preset", "Seed"]),
        st.text(max_size=40) | RAW.map(lambda b: b.decode("utf-8", "replace")),
    )
)
def test_hyperparameters_give_values_or_a_config_error(hyperparameters):
    try:
        layer = hyperparameter_layer(hyperparameters)
    except ConfigError:
        return
    assert set(layer) <= {"epochs", "learning_rate", "preset", "seed"}


def test_the_tier_runs_without_tensorflow():
    import sys

    assert not {"tensorflow", "keras", "tf2onnx"} & set(sys.modules)


@pytest.fixture(autouse=True)
def _tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # every example's folder under this test's own

"""Manifest and the local store: atomic publish, replacement, re-publishing, tamper detection."""

import json

import pytest

from helpers import make_run_dir
from job.errors import StorageError
from job.storage import open_store
from job.storage.manifest import write_manifest
from job.storage.runs import local_manifest_problems as verify_manifest


def test_manifest_detects_changed_missing_and_extra_files(tmp_path):
    d = make_run_dir(tmp_path)
    assert verify_manifest(d) == []
    (d / "sub" / "file.bin").write_text("b")
    (d / "extra.txt").write_text("x")
    (d / "metrics.json").unlink()
    problems = " ".join(verify_manifest(d))
    assert "sub/file.bin:" in problems and "extra.txt" in problems and "metrics.json" in problems


def test_local_publish_is_a_rename_and_replaces_whole_runs(tmp_path):
    store = open_store(str(tmp_path / "store"))
    store.probe()
    first = store.staging_dir("r1")
    (first / "old-only.txt").write_text("old")
    write_manifest(first, "r1")
    store.publish(first, "r1", {"test_accuracy": 0.1})
    second = store.staging_dir("r1")
    (second / "new.txt").write_text("new")
    write_manifest(second, "r1")
    uri = store.publish(second, "r1", {"test_accuracy": 0.2})
    names = sorted(p.name for p in (tmp_path / "store").iterdir())
    assert names == [".latest.lock", "latest.json", "r1"] and sorted(
        p.name for p in (tmp_path / "store" / "r1").iterdir()
    ) == ["manifest.json", "new.txt"]
    assert json.loads((tmp_path / "store" / "latest.json").read_text())["uri"] == uri


def test_unwritable_store_is_a_storage_error(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(StorageError, match="cannot write"):
        open_store(str(tmp_path / "f" / "store")).probe()

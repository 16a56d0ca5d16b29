"""Artifact stores. A store checks up front that it can be written (fail fast, before any training)
and publishes a finished local run folder so that it appears complete or not at all.

    LocalStore   a folder: the run is staged under a hidden name in the same folder, then renamed
    S3Store      s3://bucket/prefix (job.s3): objects first, manifest.json last, then latest.json
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Protocol

from job.errors import StorageError

LATEST = "latest.json"


class Store(Protocol):
    uri: str

    def probe(self) -> None: ...

    def staging_dir(self, run_id: str) -> Path: ...

    def publish(self, run_dir: Path, run_id: str, summary: dict) -> str: ...


def latest_record(run_id: str, run_uri: str, summary: dict) -> dict:
    return {"run_id": run_id, "uri": run_uri, "manifest": f"{run_uri}/manifest.json",
            "published_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "test_accuracy": summary.get("test_accuracy"), "onnx_test_accuracy": summary.get("onnx_test_accuracy")}


class LocalStore:
    def __init__(self, root: str):
        self.root = Path(root).expanduser()
        self.uri = str(self.root)

    def _fail(self, action: str, exc: OSError) -> StorageError:
        return StorageError(f"local store {self.root}: cannot {action} ({exc.strerror or exc}); choose a writable "
                            f"--out folder or fix its permissions")

    def probe(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".probe-"):
                pass
        except OSError as exc:
            raise self._fail("write", exc) from None

    def staging_dir(self, run_id: str) -> Path:
        """A hidden folder on the same filesystem, so publishing is one rename."""
        try:
            staged = Path(tempfile.mkdtemp(dir=self.root, prefix=f".incoming-{run_id}-"))
            staged.chmod(0o755)  # mkdtemp makes it private; a published run is readable like any folder
            return staged
        except OSError as exc:
            raise self._fail("create a staging folder", exc) from None

    def publish(self, run_dir: Path, run_id: str, summary: dict) -> str:
        dest = self.root / run_id
        try:
            if run_dir.parent.resolve() != self.root.resolve():
                staged = self.staging_dir(run_id)
                shutil.copytree(run_dir, staged, dirs_exist_ok=True)
                run_dir = staged
            old = None
            if dest.exists():  # same --run-id again: swap whole runs, never mix their files
                old = Path(tempfile.mkdtemp(dir=self.root, prefix=f".replaced-{run_id}-"))
                os.replace(dest, old / "run")
            os.replace(run_dir, dest)
            if old:
                shutil.rmtree(old, ignore_errors=True)
            self._write_latest(latest_record(run_id, str(dest), summary))
        except OSError as exc:
            raise self._fail("publish the run", exc) from None
        return str(dest)

    def _write_latest(self, record: dict) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".latest-")
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w") as fh:
            json.dump(record, fh, indent=2)
        os.replace(tmp, self.root / LATEST)


def open_store(cfg) -> Store:
    if cfg.out.startswith("s3://"):
        from job.s3 import S3Store, options_from_config
        return S3Store(cfg.out, options_from_config(cfg))
    return LocalStore(cfg.out)

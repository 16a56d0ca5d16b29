"""A local folder as the artifact store (LocalStore) and as a checkpoint location (LocalBlobs).

A run is staged under a hidden name in the store folder itself, so publishing is one rename on the same
filesystem: it appears whole or not at all.
"""

import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path

from job.errors import StorageError
from job.runtime.signals import deferred_signals
from job.storage.files import atomic_path, atomic_write_bytes
from job.storage.pointer import LATEST, latest_record, should_replace

LOCK = ".latest.lock"  # a hidden file: catalogs and manifests ignore it


def probe_folder(root: Path, fail) -> None:
    """The folder exists (or is created) and takes a new file: checked before any data is read."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".probe-"):
            pass
    except OSError as exc:
        raise fail("write", exc) from None


class LocalStore:
    def __init__(self, root: str):
        self.root = Path(root).expanduser()
        self.uri = str(self.root)

    def _fail(self, action: str, exc: OSError) -> StorageError:
        return StorageError(
            f"local store {self.root}: cannot {action} ({exc.strerror or exc}); choose a writable "
            f"--out folder or fix its permissions"
        )

    def probe(self) -> None:
        probe_folder(self.root, self._fail)

    def staging_dir(self, run_id: str) -> Path:
        """A hidden folder on the same filesystem, so publishing is one rename."""
        try:
            staged = Path(tempfile.mkdtemp(dir=self.root, prefix=f".incoming-{run_id}-"))
            staged.chmod(0o755)  # mkdtemp makes it private; a published run is readable like any folder
            return staged
        except OSError as exc:
            raise self._fail("create a staging folder", exc) from None

    def publish(self, run_dir: Path, run_id: str, summary: dict) -> str:
        """Everything that can fail for lack of space or inodes (a copy into staging, the new latest.json, the
        folder that takes the replaced run) happens first; the commit is renames only, with signals held."""
        dest = self.root / run_id
        if run_dir.resolve() == dest.resolve():
            raise StorageError(f"{run_dir} is already published in {self.root}; nothing to do")
        staged = latest_tmp = old = None
        try:
            if run_dir.parent.resolve() != self.root.resolve():
                staged = self.staging_dir(run_id)
                shutil.copytree(run_dir, staged, dirs_exist_ok=True)
                run_dir = staged
            record = json.dumps(latest_record(run_id, str(dest), summary), indent=2).encode()
            fd, latest_tmp = tempfile.mkstemp(dir=self.root, prefix=".latest-", suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                fh.write(record)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(latest_tmp, 0o644)
            if dest.exists():  # same --run-id again: swap whole runs, never mix their files
                old = Path(tempfile.mkdtemp(dir=self.root, prefix=f".replaced-{run_id}-"))
            lock = open(self.root / LOCK, "a")
            with lock, deferred_signals():
                if old:
                    os.replace(dest, old / "run")
                try:
                    os.replace(run_dir, dest)
                except OSError:
                    if old:
                        os.replace(old / "run", dest)  # put the previous run back
                    raise
                fcntl.flock(lock, fcntl.LOCK_EX)  # one publisher at a time compares and moves the pointer
                if should_replace(self._current_latest(), json.loads(record)):
                    os.replace(latest_tmp, self.root / LATEST)
        except OSError as exc:
            raise self._fail("publish the run", exc) from None
        finally:
            for leftover in (staged, old):
                if leftover:
                    shutil.rmtree(leftover, ignore_errors=True)
            if latest_tmp:
                Path(latest_tmp).unlink(missing_ok=True)
        return str(dest)

    def _current_latest(self) -> dict | None:
        try:
            return json.loads((self.root / LATEST).read_text())
        except (OSError, ValueError):
            return None


class LocalBlobs:
    """Named files in one folder, each written atomically. I/O failures are storage errors (exit 4)."""

    def __init__(self, root: str):
        self.root = Path(root)

    def _fail(self, action: str, exc: OSError) -> StorageError:
        return StorageError(
            f"checkpoint location {self.root}: cannot {action} ({exc.strerror or exc}); choose a "
            "writable --checkpoint-dir"
        )

    def probe(self) -> None:
        """Writable, before any training (a read-only or file path would otherwise fail after an epoch)."""
        probe_folder(self.root, self._fail)

    def put_file(self, name: str, src: Path) -> None:
        try:
            with atomic_path(self.root / name) as tmp:
                shutil.copyfile(src, tmp)
        except OSError as exc:
            raise self._fail(f"write {name}", exc) from None

    def put_bytes(self, name: str, data: bytes) -> None:
        try:
            atomic_write_bytes(self.root / name, data)
        except OSError as exc:
            raise self._fail(f"write {name}", exc) from None

    def get_bytes(self, name: str) -> bytes | None:
        try:
            return (self.root / name).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._fail(f"read {name}", exc) from None

    def get_file(self, name: str, dest: Path) -> bool:
        if not name or not (self.root / name).is_file():
            return False
        shutil.copyfile(self.root / name, dest)
        return True

    def delete(self, name: str) -> None:
        (self.root / name).unlink(missing_ok=True)

"""The runs layout, on any location (job.storage.local or job.storage.s3):

    <store>/<run-id>/...files, manifest.json (written last)     layout "runs"
    <store>/latest.json                                          the newest complete run, by training finish time
    <model dir>/...files, manifest.json                          layouts "sagemaker" / "vertex": one run, flat

Publishing, listing, the pointer, verifying, downloading and fetching a verified file all live here, once, for
both backends. Every run id read from the store is confined; every check hashes content (manifest.problems).
"""

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from job.errors import DataError, StorageError
from job.gates.json_doc import load_json
from job.gates.text import shown
from job.runtime.names import confine, confine_run_id
from job.runtime.signals import deferred_signals
from job.storage.files import folder_mode
from job.storage.layout import LATEST, MANIFEST, MODEL_ONNX, SAVEDMODEL_DIRS, savedmodel_dir
from job.storage.manifest import parse_manifest, problems, run_files
from job.storage.pointer import latest_record, should_replace

log = logging.getLogger(__name__)

MAX_POINTER_BYTES = 64 * 1024  # latest.json is a few hundred bytes


def run_folder(run_dir: Path) -> "RunStore":
    """A run folder on this machine as a store of one run (run ""): read with the same checks as a store."""
    from job.storage.local import LocalLocation

    return RunStore(LocalLocation(str(run_dir), what="run folder"))


def local_manifest_problems(run_dir: Path) -> list[str]:
    """A run folder on this machine against its own manifest (the one verifier, on a local location)."""
    folder = run_folder(run_dir).location
    try:
        return problems(folder, "", parse_manifest(folder.read(MANIFEST), str(run_dir)))
    except DataError as exc:
        return [str(exc)]


def check_new_folder(dest: Path, hint: str) -> None:
    """`dest` is new or an empty real folder (not a link to one, not a file): DataError otherwise, StorageError
    where it cannot even be looked at."""
    try:
        if dest.is_symlink():
            raise DataError(f"{dest} is a symbolic link; {hint}")
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise DataError(f"{dest} exists and is not an empty folder; {hint}")
    except OSError as exc:
        raise StorageError(f"cannot look at {dest} ({exc.strerror or exc}); choose a folder you can write") from None


class RunStore:
    def __init__(self, location, layout: str = "runs"):
        self.location, self.layout = location, layout
        self.uri = location.uri

    # ------------------------------------------------------------------ writing

    def probe(self) -> None:
        self.location.probe()

    def staging_dir(self, run_id: str) -> Path:
        return self.location.staging_dir(run_id)

    def publish(self, run_dir: Path, run_id: str, summary: dict) -> str:
        """Publish a finished run folder (verified against its manifest first: no link, no changed byte),
        whole or not at all, then move latest.json if this run finished last. Returns the run's URI."""
        found = local_manifest_problems(run_dir)
        if found:
            raise DataError(f"{run_dir} does not match its manifest: {found[0]}; nothing was published")
        local_root = self.location.root
        if local_root is not None:
            self.location.probe()  # a local store's folder is created here, never for a refused run
        if self.layout != "runs":
            return self._publish_flat(run_dir, run_id)
        staged = None
        try:
            if local_root is not None and run_dir.parent.resolve() != local_root.resolve():
                staged = self.staging_dir(run_id)  # `job publish` of a folder elsewhere: copy beside its destination
                shutil.copytree(run_dir, staged, dirs_exist_ok=True)
                run_dir = staged
            record = latest_record(run_id, self.location.describe(run_id), summary)
            return self.location.publish_tree(run_dir, run_id, lambda: self._move_pointer(record), last=MANIFEST)
        except StorageError as exc:
            raise StorageError(f"{exc}; no manifest was written and latest.json is unchanged") from None
        except OSError as exc:  # the copy into the store's folder (a full disk, no inodes)
            raise self.location.fail("copy the run into the store", exc) from None
        finally:
            if staged:
                shutil.rmtree(staged, ignore_errors=True)

    def _move_pointer(self, record: dict) -> None:
        def decide(current: bytes | None) -> bytes | None:
            try:
                pointer = load_json(current, LATEST) if current is not None else None
            except DataError:
                pointer = None  # a damaged (or oversized, or too deeply nested) pointer is replaced
            if not should_replace(pointer, record):
                log.info("latest.json stays at %s (finished later than %s)", pointer.get("run_id"), record["run_id"])
                return None
            return json.dumps(record, indent=2).encode()

        self.location.swap(LATEST, decide)

    def _publish_flat(self, run_dir: Path, run_id: str) -> str:
        """A platform's model directory holds one run, flat: its previous manifest goes first (so it never looks
        complete while it changes), then its entries, then the run's files move in, the manifest last."""
        root, given = self.location.root, run_dir
        try:
            if run_dir.parent.resolve() != root.resolve():
                run_dir = self.staging_dir(run_id)  # removed below, whatever happens
                shutil.copytree(given, run_dir, dirs_exist_ok=True)
            (root / MANIFEST).unlink(missing_ok=True)
            for old in root.iterdir():  # the folder belongs to this job: a previous attempt's files go
                if not old.name.startswith(".") and old.resolve() != run_dir.resolve():
                    shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
            with deferred_signals():
                for entry in sorted(run_dir.iterdir()):
                    if entry.name != MANIFEST:
                        os.replace(entry, root / entry.name)
                os.replace(run_dir / MANIFEST, root / MANIFEST)
        except OSError as exc:
            raise self.location.fail("publish the run", exc) from None
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
        return str(root)

    # ------------------------------------------------------------------ reading

    def runs(self, skipped: list[str] | None = None) -> list[str]:
        """The run folders whose names are safe run ids. A folder with an unsafe name (a control character, a
        line break, a name confine refuses) is skipped, never a reason to refuse the whole store; its name,
        escaped for one line (`shown`), is added to `skipped` when given."""
        found = []
        for name in self.location.folders():
            try:
                found.append(confine_run_id(name, "folder"))
            except DataError:
                if skipped is not None:
                    skipped.append(shown(name, 200))
        return found

    def latest(self) -> str | None:
        """latest.json's run id, confined (None: no pointer)."""
        raw = self.location.read(LATEST)
        if raw is None:
            return None
        pointer = load_json(raw, self.location.describe(LATEST), max_bytes=MAX_POINTER_BYTES)
        if not isinstance(pointer, dict) or not isinstance(pointer.get("run_id"), str):
            raise DataError(f"{self.location.describe(LATEST)} has no 'run_id' string")
        return confine_run_id(pointer["run_id"], f"{self.location.describe(LATEST)}: run_id")

    def here_or_latest(self) -> str | None:
        """ "" when the location is itself a run folder (a manifest or a model at its top), else latest.json's run
        id, else None."""
        if self.read("", MANIFEST) is not None or self.read("", MODEL_ONNX) is not None:
            return ""
        return self.latest()

    def resolve(self, run: str) -> str:
        """'latest' or a run id -> a run id the store holds."""
        if run == "latest":
            run = self.latest() or ""
            if not run:
                raise DataError(f"{self.uri} has no latest.json")
        confine_run_id(run)
        if run not in self.runs():
            raise DataError(f"{self.uri} holds no run {run!r}; `python -m job runs list {self.uri}` lists them")
        return run

    def _name(self, run: str, name: str) -> str:
        return f"{run}/{confine(name)}" if run else confine(name)

    def read(self, run: str, name: str) -> bytes | None:
        return self.location.read(self._name(run, name))

    def manifest(self, run: str) -> dict:
        """The run's manifest, read ONCE and parsed; "raw" holds the bytes read. A reader reads it once per
        invocation and hands this copy to the signature check and to every hashing / copying step
        (`problems`, `download`, `fetch_verified`), so that no second read can see another manifest."""
        raw = self.read(run, MANIFEST)
        manifest = parse_manifest(raw, self.location.describe(run))
        manifest["raw"] = raw
        return manifest

    def problems(self, run: str, manifest: dict | None = None) -> list[str]:
        """Every file of the run hashed against its manifest (empty: complete and intact): `manifest`, the copy
        the caller read (and checked the signature against), else read here."""
        if manifest is None:
            try:
                manifest = self.manifest(run)
            except DataError as exc:
                return [str(exc)]
        return problems(self.location, run, manifest)

    def size(self, run: str) -> int:
        return sum(max(s, 0) for s in self.location.listing(run).values())

    def download(self, run: str, dest: Path, manifest: dict | None = None) -> int:
        """Every file of the run into `dest` (new or empty), each hashed as it streams and compared with the
        manifest (`manifest`: the copy the caller read and checked; else read here, once); written into a hidden
        staging folder beside `dest`, renamed only when every file matched; the manifest written is the bytes
        that were checked. Nothing is left behind on failure. Returns the number of files."""
        check_new_folder(dest, "download into a new folder")
        manifest = self.manifest(run) if manifest is None else manifest
        parent = dest.absolute().parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=parent, prefix=f".{dest.name}.partial-"))
            staging.chmod(folder_mode())  # mkdtemp's 0o700 would become the user's folder: follow the umask
        except OSError as exc:
            raise StorageError(f"cannot create {dest} ({exc.strerror or exc}); choose a writable folder") from None
        try:
            for path, entry in sorted(manifest["files"].items()):
                target = staging / path  # confined by parse_manifest: stays inside staging
                target.parent.mkdir(parents=True, exist_ok=True)
                digest = self.location.copy_out(self._name(run, path), target, entry["bytes"])
                if digest != entry["sha256"] or target.stat().st_size != entry["bytes"]:
                    raise DataError(f"{path} of run {run} does not match its manifest (sha256); nothing was kept")
            (staging / MANIFEST).write_bytes(manifest["raw"])
            if dest.exists():
                dest.rmdir()
            os.replace(staging, dest)
        except OSError as exc:
            raise StorageError(f"cannot write into {dest} ({exc.strerror or exc}); nothing was kept") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return len(manifest["files"]) + 1

    def fetch_verified(self, run: str, name: str, dest: Path, manifest: dict | None = None) -> Path:
        """One file of a run, copied to `dest` and hashed on the way, returned only when it matches the
        manifest (`manifest`: the copy the caller read and checked the signature against; else read here):
        what a consumer loads is exactly what was published."""
        manifest = self.manifest(run) if manifest is None else manifest
        entry = manifest["files"].get(name)
        if entry is None:
            raise DataError(f"{self.location.describe(self._name(run, name))} is not in the run's manifest")
        digest = self.location.copy_out(self._name(run, name), dest, entry["bytes"])
        if digest != entry["sha256"]:
            dest.unlink(missing_ok=True)
            raise DataError(
                f"{self.location.describe(self._name(run, name))} does not match the run's manifest (sha256); "
                "the store was changed after publishing: refusing to load it"
            )
        return dest


__all__ = ["MANIFEST", "SAVEDMODEL_DIRS", "RunStore", "run_files", "savedmodel_dir"]

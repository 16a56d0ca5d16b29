"""manifest.json: path, bytes and sha256 of every other file of a run. Written last; its presence marks a run
as complete. `problems` is the one verifier: it hashes the content of every file, on any location."""

import json
import re
from pathlib import Path

from job.errors import DataError
from job.gates.json_doc import load_json
from job.runtime.names import UnsafeName, confine
from job.storage.files import sha256_file
from job.storage.layout import MANIFEST

MAX_FILE_BYTES = 2 * 1024**3  # no file of a run comes near this; a manifest saying more is refused
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def run_files(run_dir: Path) -> list[Path]:
    """Every file of the run except the manifest, sorted, relative to run_dir. A symbolic link or any other
    non-regular entry is refused: a run holds its own bytes, never a pointer to someone else's."""
    files = []
    for p in sorted(run_dir.rglob("*")):
        if p.is_symlink() or not (p.is_file() or p.is_dir()):
            raise DataError(f"{p} is a symbolic link or not a regular file; a run folder holds regular files only")
        if p.is_file() and p.relative_to(run_dir) != Path(MANIFEST):
            files.append(p.relative_to(run_dir))
    return files


def write_manifest(run_dir: Path, run_id: str) -> dict:
    files = [
        {"path": rel.as_posix(), "bytes": (run_dir / rel).stat().st_size, "sha256": sha256_file(run_dir / rel)}
        for rel in run_files(run_dir)
    ]
    manifest = {"run_id": run_id, "files": files}
    (run_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def parse_manifest(raw: bytes | None, where: str) -> dict:
    """A manifest's bytes -> {"run_id", "files": {path: {"bytes", "sha256"}}}, every field checked for shape and
    every path confined; DataError naming what is wrong."""
    if raw is None:
        raise DataError(f"{where}: no manifest.json; the run is incomplete")
    manifest = load_json(raw, f"{where}/{MANIFEST}")
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        raise DataError(f"{where}/{MANIFEST} is not a manifest (expected an object with a 'files' list)")
    files = {}
    for entry in manifest["files"]:
        if not isinstance(entry, dict):
            raise DataError(f"{where}/{MANIFEST}: an entry is not an object")
        path = confine(entry.get("path"), f"{where}/{MANIFEST}: path")
        size, digest = entry.get("bytes"), entry.get("sha256")
        if path == MANIFEST or path in files:
            raise DataError(f"{where}/{MANIFEST}: {path!r} is listed twice or lists the manifest itself")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_FILE_BYTES:
            raise DataError(f"{where}/{MANIFEST}: {path}: 'bytes' must be an integer from 0 to {MAX_FILE_BYTES:,}")
        if not isinstance(digest, str) or not _SHA256.match(digest):
            raise DataError(f"{where}/{MANIFEST}: {path}: 'sha256' must be 64 lowercase hex digits")
        files[path] = {"bytes": size, "sha256": digest}
    return {"run_id": manifest.get("run_id"), "files": files}


def problems(location, folder: str, manifest: dict) -> list[str]:
    """What differs between the files of `folder` in `location` and `manifest` (empty: intact). Every listed
    file's content is hashed; sizes come from the listing, never from metadata."""
    stored = {}
    for name, size in location.listing(folder).items():
        rel = name[len(folder) + 1 :] if folder else name
        if rel != MANIFEST:
            stored[rel] = size
    listed = manifest["files"]
    found = [f"{path}: listed but missing" for path in sorted(set(listed) - set(stored))]
    found += [f"{path}: present but not in the manifest" for path in sorted(set(stored) - set(listed))]
    for path in sorted(set(listed) & set(stored)):
        entry = listed[path]
        if stored[path] < 0:
            found.append(f"{path}: not a regular file (a symbolic link, a FIFO or a device)")
        elif stored[path] != entry["bytes"]:
            found.append(f"{path}: {stored[path]} bytes, the manifest says {entry['bytes']}")
        else:
            try:
                digest = location.hash(f"{folder}/{path}" if folder else path, entry["bytes"])
            except (DataError, UnsafeName) as exc:
                found.append(f"{path}: {exc}")
                continue
            if digest != entry["sha256"]:
                found.append(f"{path}: content differs from the manifest (sha256)")
    return found

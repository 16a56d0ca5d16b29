"""manifest.json: path, bytes and sha256 of every other file of a run. Written last; its presence marks
a run as complete."""

import json
from pathlib import Path

from job.errors import DataError
from job.storage.files import sha256_file

MANIFEST = "manifest.json"


def run_files(run_dir: Path) -> list[Path]:
    """Every regular file of the run except the manifest, in sorted order, as paths relative to run_dir."""
    return sorted(
        p.relative_to(run_dir) for p in run_dir.rglob("*") if p.is_file() and p.relative_to(run_dir) != Path(MANIFEST)
    )


def write_manifest(run_dir: Path, run_id: str) -> dict:
    files = [
        {"path": rel.as_posix(), "bytes": (run_dir / rel).stat().st_size, "sha256": sha256_file(run_dir / rel)}
        for rel in run_files(run_dir)
    ]
    manifest = {"run_id": run_id, "files": files}
    (run_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_manifest(run_dir: Path) -> dict:
    """The manifest of a finished run folder, or DataError naming what is wrong with it."""
    path = run_dir / MANIFEST
    if not path.is_file():
        raise DataError(f"{run_dir}: no manifest.json; only a finished run folder can be published")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} is not valid JSON ({exc}); the run folder is damaged") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        raise DataError(f"{path} is not a manifest (expected an object with a 'files' list)")
    return manifest


def verify_manifest(run_dir: Path) -> list[str]:
    """Problems found comparing run_dir with its manifest (empty list = intact)."""
    path = run_dir / MANIFEST
    if not path.is_file():
        return [f"{path} is missing (the run is incomplete)"]
    try:
        manifest = json.loads(path.read_text())
        listed = {f["path"]: f for f in manifest["files"]}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return [f"{path} is not a valid manifest ({exc})"]
    problems = []
    present = {p.as_posix() for p in run_files(run_dir)}
    for rel, entry in listed.items():
        file = run_dir / rel
        if rel not in present:
            problems.append(f"{rel}: listed but missing")
        elif file.stat().st_size != entry["bytes"] or sha256_file(file) != entry["sha256"]:
            problems.append(f"{rel}: size or sha256 differs from the manifest")
    problems += [f"{rel}: present but not in the manifest" for rel in sorted(present - set(listed))]
    return problems

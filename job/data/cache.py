"""The decode cache: decoded arrays stored as one .npz per source, keyed by the source's sha256, so a
second run of the same data skips decoding (50,000 JPEGs: seconds -> well under a second)."""

import hashlib
import logging
import os
from pathlib import Path

import numpy as np

from job.data.dataset import IMAGE_SIZE, Dataset
from job.runtime.signals import signals_held
from job.storage.files import atomic_path, sha256_file

log = logging.getLogger(__name__)

CACHE_FORMAT = "v1"


def source_sha256(path: Path) -> str:
    """sha256 of a file, or of a folder tree (relative paths + contents, in sorted order)."""
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink()):
        h.update(os.fsencode(file.relative_to(path).as_posix()) + b"\0")  # a name's own bytes, UTF-8 or not
        h.update(sha256_file(file).encode())
    return h.hexdigest()


def _cache_file(cache_dir: Path, digest: str) -> Path:
    return cache_dir / f"decoded-{digest[:32]}-{CACHE_FORMAT}.npz"


def read_cache(cache_dir: Path, digest: str) -> Dataset | None:
    file = _cache_file(cache_dir, digest)
    if not file.is_file():
        return None
    try:
        with np.load(file, allow_pickle=False) as z:
            has_test = bool(z["has_test"])
            return Dataset(
                z["x_train"],
                z["y_train"],
                [str(c) for c in z["class_names"]],
                z["x_test"] if has_test else None,
                z["y_test"] if has_test else None,
                sha256=digest,
            )
    except Exception as exc:  # a torn or foreign cache file is not fatal: decode again (signals are not Exceptions)
        log.warning("ignoring unreadable cache file %s (%s)", file, exc)
        return None


def write_cache(cache_dir: Path, digest: str, ds: Dataset) -> None:
    empty = np.zeros((0, *IMAGE_SIZE, 3), np.uint8)
    try:  # a signal waits for the write (np.savez's own cleanup, cut in the middle, raises in place of the signal)
        with signals_held(), atomic_path(_cache_file(cache_dir, digest)) as tmp, tmp.open("wb") as fh:
            np.savez(
                fh,
                x_train=ds.x_train,
                y_train=ds.y_train,
                class_names=np.array(ds.class_names),
                has_test=np.array(ds.x_test is not None),
                x_test=ds.x_test if ds.x_test is not None else empty,
                y_test=ds.y_test if ds.y_test is not None else np.zeros(0, np.int64),
            )
    except OSError as exc:  # a read-only or full cache must not fail the run
        log.warning("could not write the data cache in %s (%s); the next run decodes again", cache_dir, exc)

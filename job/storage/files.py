"""Local file primitives every writer shares: sha256 of a file, and writes that appear whole or not at all."""

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(dest: Path, mode: int = 0o644) -> Iterator[Path]:
    """A temporary path beside `dest` to write to; renamed onto `dest` (durably) when the block succeeds,
    removed when it fails or is interrupted (a signal, disk full), so `dest` is never half-written."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)


def atomic_write_bytes(dest: Path, data: bytes, mode: int = 0o644) -> None:
    with atomic_path(dest, mode) as tmp:
        tmp.write_bytes(data)

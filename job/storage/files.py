"""Local file primitives every writer shares: sha256 of a file, and writes that appear whole or not at all."""

import contextlib
import errno
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from job.errors import StorageError

MIN_FREE_BYTES = 1024 * 1024


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


def folder_mode() -> int:
    """The mode a plain mkdir gives a new folder here (0o777 less the umask, 0o755 typically): for folders that
    tempfile.mkdtemp made private (0o700) before they are renamed into place as a user's folder."""
    mask = os.umask(0o077)
    os.umask(mask)
    return 0o777 & ~mask


def atomic_write_bytes(dest: Path, data: bytes, mode: int = 0o644) -> None:
    with atomic_path(dest, mode) as tmp:
        tmp.write_bytes(data)


def out_of_space(folder: Path, exc: BaseException) -> StorageError | None:
    """A write that failed because the staging folder's filesystem is full (space or inodes) is a storage
    error (exit 4), whichever library hit it; anything else is not this function's to explain."""
    try:
        fs = os.statvfs(folder if folder.exists() else folder.parent)
    except OSError:
        return None
    full = fs.f_bavail * fs.f_frsize < MIN_FREE_BYTES or (fs.f_files and fs.f_favail == 0)
    if not full and getattr(exc, "errno", None) not in (errno.ENOSPC, errno.EDQUOT):
        return None
    return StorageError(
        f"the filesystem of {folder.parent} is full (free: {fs.f_bavail * fs.f_frsize:,} bytes, "
        f"{fs.f_favail:,} inodes) while writing the run ({exc}); free space or choose another --out; "
        "nothing was published"
    )

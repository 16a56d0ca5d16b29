"""Reading the entries of a folder or a tar archive safely: no links, no `..`, no special files (a FIFO
or device would hang the reader), and no entry read past a size limit checked *before* reading (a tar
header or `stat` gives the size), so a hostile source cannot exhaust memory. Every tar archive (training
sources, `job predict`'s archives and standard input, the dry run's description) is read through `Archive`,
which also bounds the whole: at most MAX_ARCHIVE_MEMBERS entries and MAX_ARCHIVE_BYTES of member bytes
(decompressed), so a small .tar.gz that inflates to gigabytes (a compression bomb) is refused as a data error.

Imports no TensorFlow: the ONNX-only predictor reads its images with it too.
"""

import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from job.errors import DataError

# The largest legitimate entries: a CIFAR-10 python batch is 31 MB; a 32x32 image a few KB; a photo given
# to the predictor some MB.
MAX_ENTRY_BYTES = 64 * 1024 * 1024
# The largest legitimate archives: CIFAR-10's python batches are 178 MB and its 60,000 images 60,022 entries; a
# training image is 32x32 (a few KB). Bytes are counted from the member headers before a member is read.
MAX_ARCHIVE_BYTES = 1024**3
MAX_ARCHIVE_MEMBERS = 200_000


def check_regular_file(path: Path, limit: int = MAX_ENTRY_BYTES) -> int:
    """Size of `path`, refusing anything but a regular file within `limit` bytes, by `stat`, never opened."""
    try:
        info = path.lstat()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if stat.S_ISLNK(info.st_mode):
        raise DataError(f"{path} is a symbolic link; links are refused, copy the file instead")
    if not stat.S_ISREG(info.st_mode):
        raise DataError(f"{path} is not a regular file (a FIFO, device or socket); refusing to read it")
    if info.st_size > limit:
        raise DataError(f"{path} is {info.st_size:,} bytes, over the {limit:,}-byte limit for one entry")
    return info.st_size


def read_file(path: Path, limit: int = MAX_ENTRY_BYTES) -> bytes:
    check_regular_file(path, limit)
    with path.open("rb") as fh:
        return fh.read(limit + 1)[:limit]


def safe_member_name(archive: Path, member: tarfile.TarInfo, limit: int = MAX_ENTRY_BYTES) -> str:
    """The member's normalised name, or DataError for unsafe, special or oversized members."""
    name = member.name
    parts = PurePosixPath(name).parts
    if name.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
        raise DataError(f"{archive}: unsafe entry {name!r} (absolute path or '..'); refusing the archive")
    if member.issym() or member.islnk():
        raise DataError(f"{archive}: entry {name!r} is a link; archives with links are refused")
    if not (member.isfile() or member.isdir()):
        raise DataError(f"{archive}: entry {name!r} is not a regular file or folder; refusing the archive")
    if member.issparse():  # its bytes are not one extent; image sets never need one
        raise DataError(f"{archive}: entry {name!r} is a sparse file; re-create the archive without --sparse")
    if member.size < 0:  # a pax `size` of -1: tarfile takes it, and reading it would read the rest of the stream
        raise DataError(f"{archive}: entry {name!r} declares a negative size; re-create the archive")
    if member.size > limit:
        raise DataError(
            f"{archive}: entry {name!r} is {member.size:,} bytes, over the {limit:,}-byte limit for "
            "one entry; refusing the archive"
        )
    return "/".join(p for p in parts if p != ".")


def iter_folder(path: Path) -> Iterator[tuple[str, Path | None]]:
    """(relative name, Path) for every file, (name + '/', None) for every folder, sorted."""
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path).as_posix()
        if p.is_symlink():
            raise DataError(f"{path}: {rel} is a symbolic link; links are refused, copy the file instead")
        if p.is_dir():
            yield rel + "/", None
        else:
            check_regular_file(p)
            yield rel, p


def open_tar(source: Path | BinaryIO) -> tarfile.TarFile:
    """The archive as a stream ("r|*": tarfile's _Stream, a plain object over os.read, with the decompressor
    the first bytes name). Not "r:*": that opens each decompressor in turn, and gzip/bz2/lzma file objects
    are io.BufferedReader-based, whose constructors, `closed` checks and finalizers clear what a signal's handler
    raised in them (see member_bytes). Members are read in archive order, as they are here."""
    if isinstance(source, Path):
        return tarfile.open(source, "r|*")
    return tarfile.open(fileobj=source, mode="r|*")


def is_tar(source: Path | BinaryIO) -> bool:
    """tarfile.is_tarfile through open_tar (a file object is rewound after)."""
    start = None if isinstance(source, Path) else source.tell()
    try:
        with open_tar(source):
            return True
    except (tarfile.TarError, EOFError, OSError, ValueError):
        return False
    finally:
        if start is not None:
            source.seek(start)


UNREADABLE = (tarfile.TarError, EOFError, OSError, ValueError)  # zlib/gzip errors are OSError/EOFError


class Archive:
    """One tar archive read as a stream within the archive limits: `members()` yields each header, DataError past
    MAX_ARCHIVE_MEMBERS entries or once the headers' sizes pass MAX_ARCHIVE_BYTES (before the member is read or
    skipped); `read(member)` its bytes. `label` names it in errors."""

    def __init__(self, source: Path | BinaryIO, label: str | None = None):
        self.source, self.label, self.count, self.bytes = source, label or str(source), 0, 0

    def __enter__(self) -> "Archive":
        self.tar = open_tar(self.source)
        return self

    def __exit__(self, *exc) -> None:
        self.tar.close()

    def members(self) -> Iterator[tarfile.TarInfo]:
        # tar.next() rather than iterating the TarFile: in stream mode that keeps every header in tar.members
        # (500,000 folder entries in a 2 MB archive: 336 MB); the list is emptied after each.
        while (member := self.tar.next()) is not None:
            self.tar.members.clear()
            self.count += 1
            if self.count > MAX_ARCHIVE_MEMBERS:
                raise DataError(
                    f"{self.label}: over {MAX_ARCHIVE_MEMBERS:,} entries, the limit for one archive; "
                    "split the data set or remove what it does not need"
                )
            # Every member's bytes are passed in the stream, read or skipped (a skipped 2 GiB member of zeros is
            # 14 s of gzip), so each header is charged before anyone decides what to do with the member.
            self._charge(member)
            yield member

    def _charge(self, member: tarfile.TarInfo) -> None:
        self.bytes += max(member.size, 0)
        if self.bytes > MAX_ARCHIVE_BYTES:
            raise DataError(
                f"{self.label}: its entries up to {member.name!r} hold over {MAX_ARCHIVE_BYTES:,} bytes uncompressed, "
                "the limit for one archive (a compression bomb, or not a 32x32 image set); check where it came "
                "from, or split it"
            )

    def read(self, member: tarfile.TarInfo) -> bytes:
        return member_bytes(self.tar, member, self.label)


def iter_tar(path: Path, read: bool = True) -> Iterator[tuple[str, bytes | None]]:
    """(name, bytes) for every file member, (name + '/', None) for every folder, in archive order, within the
    archive limits; with read=False, (name, None) for the files too (headers only, bytes counted all the same)."""
    try:
        with Archive(path) as archive:
            for member in archive.members():
                name = safe_member_name(path, member)
                if member.isdir():
                    yield name.rstrip("/") + "/", None
                elif read:
                    yield name, archive.read(member)
                else:
                    yield name, None
    except DataError:
        raise
    except UNREADABLE as exc:
        raise DataError(
            f"{path}: unreadable archive ({exc or type(exc).__name__}); re-download or re-create it"
        ) from None


def member_bytes(tar: tarfile.TarFile, member: tarfile.TarInfo, archive: Path | str) -> bytes:
    """A regular member's bytes, read from the archive's stream, not through tar.extractfile(): that wraps a
    Python file object in an io.BufferedReader, whose constructor calls its tell() and clears whatever it raised,
    and whose finalizer clears what its close() raised. A SIGTERM handled in either (its handler raises
    job.errors.Terminated there) was dropped without a trace, and the run went on to publish
    (job.runtime.signals explains the class). The stream only seeks forward: call it once per member, in order."""
    if member.issparse():  # its bytes are not one extent; image sets never need one
        raise DataError(f"{archive}: entry {member.name!r} is a sparse file; re-create the archive without --sparse")
    tar.fileobj.seek(member.offset_data)
    data = tar.fileobj.read(member.size)
    if len(data) != member.size:
        raise tarfile.ReadError("unexpected end of data")
    return data


def read_entry(handle: Path | bytes) -> bytes:
    return read_file(handle) if isinstance(handle, Path) else handle

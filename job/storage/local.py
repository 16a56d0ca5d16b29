"""A local folder as a location: read, write (atomic), list, stat, delete, hash, publish a staged folder, and a
compare-and-swap of one small file (the pointer), under a lock.

Every name passes job.runtime.names.confine, and no symbolic link is ever followed: each folder on the way is
opened with O_NOFOLLOW relative to the one before it, the file itself with O_NOFOLLOW | O_NONBLOCK (a FIFO
never blocks), and only regular files are read, up to a size bound checked before reading.
"""

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from job.errors import DataError, StorageError
from job.runtime.names import confine
from job.runtime.signals import deferred_signals
from job.storage.files import atomic_path, atomic_write_bytes
from job.storage.location import Location, Missing

MAX_READ = 64 * 1024 * 1024  # metadata files (manifests, pointers, metrics): far below this
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class NotRegular(DataError):
    """A name that is a symbolic link, a FIFO, a device or a folder where a file was expected (exit 3)."""


class LocalLocation(Location):
    def __init__(self, root: str, what: str = "local store", hint: str = "choose a writable --out folder"):
        if not str(root).strip():
            raise StorageError(f"{what}: an empty path; name a folder")
        self.root = Path(root).expanduser()
        self.uri = str(self.root)
        self.what, self.hint = what, hint

    def fail(self, action: str, exc: OSError) -> StorageError:
        return StorageError(f"{self.what} {self.root}: cannot {action} ({exc.strerror or exc}); {self.hint}")

    def describe(self, name: str = "") -> str:
        return f"{self.uri}/{name}" if name else self.uri

    # ------------------------------------------------------------------ opening without following links

    @contextlib.contextmanager
    def _folder(self, parts: list[str]) -> Iterator[int]:
        """A descriptor of root/parts..., each step opened with O_NOFOLLOW relative to the last."""
        fd = os.open(self.root, _DIR_FLAGS)
        try:
            for part in parts:
                try:
                    nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise NotRegular(f"{self.describe('/'.join(parts))}: {part!r} is not a real folder") from None
                    raise
                os.close(fd)
                fd = nxt
            yield fd
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def open(self, name: str, limit: int = MAX_READ) -> Iterator:
        """A binary file object for a regular file `name`, at most `limit` bytes; FileNotFoundError if missing."""
        confine(name)
        *parents, leaf = name.split("/")
        with self._folder(parents) as dir_fd:
            try:
                fd = os.open(leaf, _FILE_FLAGS, dir_fd=dir_fd)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise NotRegular(f"{self.describe(name)} is a symbolic link; refusing to follow it") from None
                raise
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise NotRegular(f"{self.describe(name)} is not a regular file")
        with os.fdopen(fd, "rb") as fh:
            if info.st_size > limit:
                raise DataError(f"{self.describe(name)} is {info.st_size:,} bytes, over the {limit:,}-byte limit")
            os.set_blocking(fh.fileno(), True)
            yield fh

    def read(self, name: str, limit: int = MAX_READ) -> bytes | None:
        """The bytes of `name`, or None where it does not exist."""
        try:
            with self.open(name, limit) as fh:
                return fh.read(limit + 1)[:limit]
        except (FileNotFoundError, NotADirectoryError):
            return None
        except DataError:
            raise
        except OSError as exc:
            raise self.fail(f"read {name}", exc) from None

    def copy_out(self, name: str, dest: Path, limit: int) -> str:
        """Copy `name` to `dest` (a new file), hashing as it streams; returns the sha256."""
        h = hashlib.sha256()
        try:
            with self.open(name, limit) as src, open(dest, "xb") as out:
                for block in iter(lambda: src.read(1 << 20), b""):
                    h.update(block)
                    out.write(block)
        except FileNotFoundError:
            raise Missing(f"{self.describe(name)} is missing") from None
        except DataError:
            raise
        except OSError as exc:
            raise self.fail(f"read {name}", exc) from None
        return h.hexdigest()

    def hash(self, name: str, limit: int) -> str | None:
        """sha256 of the content of `name` (None where it does not exist)."""
        h = hashlib.sha256()
        try:
            with self.open(name, limit) as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return h.hexdigest()

    # ------------------------------------------------------------------ listing

    def listing(self, prefix: str = "") -> dict[str, int]:
        """name -> size of every entry below `prefix` (recursive); -1 for anything that is not a regular file
        (a symbolic link, a FIFO, a device), which is never followed."""
        base = self.root / confine(prefix) if prefix else self.root
        out: dict[str, int] = {}
        if not base.is_dir() or base.is_symlink():
            return out
        for folder, dirs, files in os.walk(base, followlinks=False):
            for entry in [*files, *(d for d in dirs if os.path.islink(os.path.join(folder, d)))]:
                path = Path(folder) / entry
                info = path.lstat()
                rel = path.relative_to(self.root).as_posix()
                out[rel] = info.st_size if stat.S_ISREG(info.st_mode) else -1
        return out

    def folders(self) -> list[str]:
        """The visible folders at the top (not symbolic links to folders)."""
        try:
            return sorted(
                p.name for p in self.root.iterdir() if not p.name.startswith(".") and p.is_dir() and not p.is_symlink()
            )
        except OSError as exc:
            raise self.fail("list", exc) from None

    # ------------------------------------------------------------------ writing

    def probe(self) -> None:
        """The folder exists (or is created) and takes a new file: checked before any data is read."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".probe-"):
                pass
        except OSError as exc:
            raise self.fail("write", exc) from None

    def write(self, name: str, data: bytes) -> None:
        try:
            atomic_write_bytes(self.root / confine(name), data)
        except OSError as exc:
            raise self.fail(f"write {name}", exc) from None

    def put_file(self, name: str, src: Path) -> None:
        try:
            with atomic_path(self.root / confine(name)) as tmp:
                shutil.copyfile(src, tmp)
        except OSError as exc:
            raise self.fail(f"write {name}", exc) from None

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.root / confine(name)).unlink()

    def staging_dir(self, name: str) -> Path:
        """A hidden folder on the same filesystem, so publishing is one rename."""
        try:
            staged = Path(tempfile.mkdtemp(dir=self.root, prefix=f".incoming-{name}-"))
            staged.chmod(0o755)  # mkdtemp makes it private; a published run is readable like any folder
            return staged
        except OSError as exc:
            raise self.fail("create a staging folder", exc) from None

    def publish_tree(self, staged: Path, name: str, commit: Callable[[], None], last: str = "") -> str:
        """Rename the staged folder to `name` (swapping out a folder of that name, whole), then `commit()`,
        signals held: renames only, so it happens whole or not at all (`last` needs no special order here)."""
        dest, old = self.root / confine(name), None
        try:
            if dest.exists() or dest.is_symlink():  # same name again: swap whole runs, never mix their files
                old = Path(tempfile.mkdtemp(dir=self.root, prefix=f".replaced-{name}-"))
            with deferred_signals():
                if old:
                    os.replace(dest, old / "run")
                try:
                    os.replace(staged, dest)
                except OSError:
                    if old:
                        os.replace(old / "run", dest)  # put the previous run back
                    raise
                try:
                    commit()
                except BaseException:  # the pointer could not move (no space, no inode): take the run back out
                    os.replace(dest, staged)
                    if old:
                        os.replace(old / "run", dest)
                    raise
        except OSError as exc:
            raise self.fail(f"publish {name}", exc) from None
        finally:
            if old:
                shutil.rmtree(old, ignore_errors=True)
        return str(dest)

    def swap(self, name: str, decide: Callable[[bytes | None], bytes | None]) -> None:
        """Compare-and-swap `name`: under an exclusive lock on a hidden regular file beside it, `decide(current)`
        returns the new content or None to keep it. The lock file is opened without following a link and
        without blocking on a FIFO; anything but a regular file is refused."""
        lock_name = f".{Path(name).stem}.lock"  # .latest.lock
        created = not os.path.lexists(self.root / lock_name)
        try:
            fd = os.open(self.root / lock_name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
                raise StorageError(f"{self.describe(lock_name)} is not a regular file; remove it") from None
            raise self.fail(f"lock {name}", exc) from None
        with os.fdopen(fd, "rb"):
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise StorageError(f"{self.describe(lock_name)} is not a regular file; remove it")
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                current = self.read(name)
            except DataError:
                current = None  # a damaged pointer is replaced
            new = decide(current)
            if new is not None:
                try:
                    self.write(name, new)
                except StorageError:
                    if created:  # leave the folder as it was
                        (self.root / lock_name).unlink(missing_ok=True)
                    raise

"""Secondary outputs: the CI reports, the TensorBoard folder, the tracking server. They never fail or hang a
run that has trained:

- before any data is read (and by `train --dry-run`) each is probed: a folder that cannot be created or
  written, a report file that is a folder, a link, a FIFO or a device, fails the run at once with exit 4 and
  one line naming the variable or flag, as an unwritable store or checkpoint location does;
- afterwards every write is bounded in time (a thread the run stops waiting for after `WRITE_TIMEOUT_S`) and
  opened without following a link (O_NOFOLLOW) or blocking on a FIFO with no reader (O_NONBLOCK), and only a
  regular file is written (fstat on the open descriptor, so a file swapped after the probe is still checked);
- a failure after the probe is a warning on stderr plus an `output_failed` event on stdout: the run is still
  published and its exit code is its own.
"""

import logging
import os
import stat
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from job.errors import StorageError
from job.gates.text import shown
from job.runtime.events import emit

log = logging.getLogger("job")

WRITE_TIMEOUT_S = 10.0  # one report write; a regular file on a healthy disk takes milliseconds
MAX_REPORT_BYTES = 1024 * 1024  # GitHub's limit for one step's summary; ours are a few KB

_NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _refusal(what: str, path, problem: str) -> StorageError:
    return StorageError(f"{what} {shown(str(path))} {problem}; point it at a writable regular file or unset it")


def _lstat(path: Path):
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):  # then its folder is checked
        return None


def _check_folder(folder: Path, what: str, path) -> None:
    try:
        info = os.stat(folder)
    except OSError as exc:
        raise _refusal(what, path, f"is in a folder that cannot be used ({exc.strerror or exc})") from None
    if not stat.S_ISDIR(info.st_mode):
        raise _refusal(what, path, "is under something that is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise _refusal(what, path, "is in a folder this process cannot write")


def probe_append_file(path, what: str) -> None:
    """A file the run appends to (GitHub's step summary): a regular file, or absent in a writable folder."""
    path = Path(path)
    try:
        info = _lstat(path)
    except OSError as exc:
        raise _refusal(what, path, f"cannot be read ({exc.strerror or exc})") from None
    if info is None:
        _check_folder(path.parent, what, path)
        return
    if not stat.S_ISREG(info.st_mode):
        raise _refusal(what, path, f"is {_kind(info.st_mode)}")
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | _NO_FOLLOW))
    except OSError as exc:
        raise _refusal(what, path, f"cannot be written ({exc.strerror or exc})") from None


def probe_replace_file(path, what: str) -> None:
    """A file the run replaces (GitLab's metrics.txt: written beside it and renamed over it, so a link there is
    replaced, never followed): its folder exists and is writable, and the name is not a folder."""
    path = Path(path)
    try:
        info = _lstat(path)
    except OSError as exc:
        raise _refusal(what, path, f"cannot be read ({exc.strerror or exc})") from None
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise _refusal(what, path, "is a folder")
    _check_folder(path.parent, what, path)


def probe_folder(path, what: str) -> None:
    """A folder the run writes into (TensorBoard logs): created if missing, and a file can be made in it."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not folder.is_dir():
            raise NotADirectoryError(20, "not a folder")
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise StorageError(
            f"{what} {shown(str(path))} cannot be written ({exc.strerror or exc}); fix or unset it"
        ) from None


def probe_outputs(log_dir: str, env=None) -> dict:
    """The TensorBoard folder (--log-dir, or the platform's) and the CI report files, before any data is read
    and in `--dry-run`. A URI log dir (gs://...) is TensorFlow's own file system: not probed here."""
    from job.report import ci

    if log_dir and "://" not in log_dir:
        probe_folder(log_dir, "TensorBoard log folder (--log-dir)")
    return {"tensorboard": log_dir or None, **ci.probe(env)}


def _append(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NO_FOLLOW, 0o644)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"is {_kind(info.st_mode)}, not a regular file")
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _replace(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)  # a link at `path` is replaced by the file, its target left alone
    finally:
        Path(tmp).unlink(missing_ok=True)


def bounded(call: Callable[[], object], timeout: float) -> tuple[object, str | None]:
    """(result, None), or (None, why it failed) when `call` raised or did not return within `timeout` seconds
    (it is then left running in a daemon thread, which cannot keep the process alive)."""
    box: dict = {}

    def target():
        try:
            box["result"] = call()
        except Exception as exc:  # every failure of a secondary output is reported the same way
            box["error"] = exc

    worker = threading.Thread(target=target, name="secondary-output", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        return None, f"no answer within {timeout:.0f} s"
    if "error" in box:
        exc = box["error"]
        reason = (str(exc).splitlines() or [""])[0] or type(exc).__name__
        return None, shown(reason, 200)
    return box.get("result"), None


def output_failed(output: str, reason: str, **fields) -> None:
    """A secondary output that failed after the probe: one warning and one `output_failed` event."""
    log.warning("%s could not be written (%s); the run's outcome is unchanged", output, reason)
    emit("output_failed", output=output, reason=reason, **fields)


def write_text(path, text: str, output: str, *, append: bool) -> bool:
    """Append to (or replace) a report file; False, with a warning and an event, when it cannot be done."""
    data = text.encode("utf-8")[:MAX_REPORT_BYTES]
    path = Path(path)
    _, error = bounded(lambda: (_append if append else _replace)(path, data), WRITE_TIMEOUT_S)
    if error:
        output_failed(output, f"{shown(str(path))}: {error}")
        return False
    return True

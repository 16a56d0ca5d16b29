"""Signals around a commit point: SIGTERM/SIGINT that arrive while a publish is being committed wait until the
commit is done, so a run is either published (and the command says so) or not published at all.

Once a commit completed, the run IS published: a later SIGTERM/SIGINT is only logged and the command ends as it
would have (exit 0, its `run_published`/`run_complete` line); a platform that retries on 143 would otherwise run
again what is done, and "nothing was published" would be false (`committed`, `end_of_process`).

Everywhere else a signal acts at once: SIGTERM raises job.errors.Terminated, SIGINT raises KeyboardInterrupt
(`install_handlers`, called by job.cli), and both unwind through the `finally` clauses that remove partial files.
A handler's exception can be dropped by the code it interrupted (see "dropped" below): the handlers also record
their signal, and every stage start and every commit raises a recorded signal again (`raise_dropped_signal`).
"""

import contextlib
import logging
import os
import signal
import sys
import time

from job.errors import Terminated

log = logging.getLogger(__name__)

DEFERRED = (signal.SIGTERM, signal.SIGINT)


def _recording(received: list[int]) -> dict | None:
    """Replace the SIGTERM/SIGINT handlers by ones that append to `received`; the previous handlers, or None off
    the main thread. signal.signal() first runs the handlers of signals already pending: if one of those raises,
    the handlers replaced so far are put back, so no recorder outlives this call."""
    previous: dict = {}
    try:
        for sig in DEFERRED:
            previous[sig] = signal.signal(sig, lambda signum, frame: received.append(signum))
    except ValueError:
        return None
    except BaseException:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        raise
    return previous


@contextlib.contextmanager
def deferred_signals():
    """Hold SIGTERM/SIGINT during the block; re-deliver them after it, unless the block completed, in which case
    the work they would have interrupted is done and the signal is only logged."""
    raise_dropped_signal()  # a signal whose exception was dropped before the commit: nothing is committed
    received: list[int] = []
    previous = _recording(received)
    if previous is None:  # not the main thread: signals cannot be handled here anyway
        yield
        return
    completed = False
    try:
        yield
        completed = True
    finally:
        # The job's own process (its handlers installed): straight from the recorders to the loggers, no moment
        # where a signal undoes the publish. Anywhere else (a test, a library caller) its handlers come back.
        if completed and previous.get(signal.SIGTERM) is raise_on_signal:
            _COMMITTED.append(time.monotonic())
            for sig in DEFERRED:
                signal.signal(sig, _after_commit)
        else:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if received and completed:
            log.warning("%s arrived while publishing; the publish completed first", signal.Signals(received[0]).name)
        elif received:
            signal.raise_signal(received[0])


_COMMITTED: list[float] = []  # when a commit completed, in this process


def committed() -> bool:
    """Whether a publish of this process committed: from then on, the run is published whatever arrives."""
    return bool(_COMMITTED)


def _after_commit(signum, frame) -> None:
    log.warning(
        "%s arrived after the run was published; finishing (the run stays published)", signal.Signals(signum).name
    )


def end_of_process() -> None:
    """After a commit, ignore SIGTERM/SIGINT for the rest of the process: the interpreter's shutdown puts the
    default action back in place of a Python handler (not of SIG_IGN), and a signal then killed the process (-15)
    after it had published and said so."""
    if _COMMITTED:
        with contextlib.suppress(ValueError):  # not the main thread
            for sig in DEFERRED:
                signal.signal(sig, signal.SIG_IGN)


# ---------------------------------------------------------------------------------------------- dropped
#
# A Python signal handler runs at whatever bytecode the main thread reaches next, and some C code that calls
# back into Python clears what the callback raised, with no trace (no "Exception ignored", no unraisablehook):
# io.BufferedReader() calls its raw file's tell() and clears its error, and an unclosed file object's finalizer
# clears what its close() or flush() raised. tarfile.extractfile() builds such a reader over a Python file
# object for every member: a SIGTERM handled in its tell() or in the previous member's flush() was dropped, and
# the run went on to publish (6 of 140 real-CLI runs signalled 0.05-0.3 s into a cold data stage; the handler's
# stack, logged in the lost ones, was in extractfile; 36 of 2,094 call points of reading a 10-member archive).
# The data reader no longer uses it (job.data.entries). For every other such place the handlers record their
# signal before raising: raise_dropped_signal(), at each stage start and each commit, raises it again, and
# signal_over_errors() ends the command as the signal when a cleanup's error took the signal's place.

_SIGNALLED: list[tuple[int, float]] = []  # (signal, monotonic time) for each signal whose handler raised


def _exception_for(sig: int) -> BaseException:
    return Terminated() if sig == signal.SIGTERM else KeyboardInterrupt()


def raise_on_signal(signum, frame):
    """The handler of SIGTERM (Terminated) and SIGINT (KeyboardInterrupt), recorded first."""
    _SIGNALLED.append((signum, time.monotonic()))
    raise _exception_for(signum)


def install_handlers() -> None:
    """The process's SIGTERM/SIGINT handlers (the training loop puts its own, checkpointing one in place while it
    runs), a fresh record, and the unraisable-exception safety net."""
    _SIGNALLED.clear()
    _COMMITTED.clear()
    for sig in DEFERRED:
        signal.signal(sig, raise_on_signal)
    redeliver_swallowed_signals()


def raise_dropped_signal() -> None:
    """Raise again a signal whose handler raised but whose exception was dropped on its way up; nothing while
    such an exception is being handled (a `finally` or `except` clause of the unwinding)."""
    if not _SIGNALLED or isinstance(sys.exception(), (Terminated, KeyboardInterrupt)):
        return
    raise _first_signal("the code it interrupted dropped it; stopping now")


@contextlib.contextmanager
def signal_over_errors():
    """An error that ends the block after a signal's handler raised is the work of that signal's unwinding (a
    cleanup in a `finally` that fails when cut short raises in place of Terminated): the block ends with the
    signal's exception instead (exit 143 or 130), the error as its cause."""
    try:
        yield
    except Exception as exc:
        if not _SIGNALLED:
            raise
        raise _first_signal(f"{type(exc).__name__} was raised on the way out; stopping for the signal") from exc


def _first_signal(what_happened: str) -> BaseException:
    """The exception of the first recorded signal, with one warning line saying when it came and what became of it."""
    sig, at = _SIGNALLED[0]
    log.warning("%s arrived %.1f s ago; %s", signal.Signals(sig).name, time.monotonic() - at, what_happened)
    return _exception_for(sig)


# ---------------------------------------------------------------------------------------------- forks
#
# CPython runs the Python callbacks registered with os.register_at_fork (logging registers one: it takes its
# lock before a fork and releases it after) right after fork(), and an exception raised in them is reported
# as "Exception ignored in ..." and dropped (run_at_forkers -> PyErr_WriteUnraisable). A SIGTERM that arrives
# while the main thread forks (the decode pool starting its workers: a fork of a process holding the
# archive's bytes takes milliseconds, longer on a loaded machine) has its handler run inside that callback:
# Terminated is raised there and swallowed, and the run went on to publish. Measured: 116 of 314 SIGTERMs
# sent to a process forking in a loop (a 300 MB heap) were lost that way on 2 cores.


@contextlib.contextmanager
def signals_held():
    """Hold SIGTERM/SIGINT while the block runs; after it, whatever happened in it, raise the first one again,
    where its own handler acts as anywhere else. For blocks that must not be cut in the middle: forks (a handler
    that runs inside an at-fork callback loses nothing: it only records), and writes whose cleanup fails when cut
    (np.savez closes its zip in a `finally`, and that close raises ValueError when a member was being written:
    the ValueError replaced Terminated). Not the signal mask: the C-level handler runs in whichever thread the
    kernel picks, and the main thread would still run the Python handler inside the callback. Children forked
    inside inherit the recording handlers: `child_signals` (a pool initializer) replaces them."""
    received: list[int] = []
    previous = _recording(received)
    if previous is None:  # not the main thread: signals are not handled here
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if received:
            signal.raise_signal(received[0])


def child_signals() -> None:
    """In a worker process forked by the job: SIGTERM ends it at once (a pool being shut down, or a process
    group signalled together), SIGINT is left to the parent (Ctrl-C reaches the whole foreground group: the
    parent stops the pool)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _kill_later(sig: int) -> None:
    import time

    time.sleep(0.02)  # the hook has returned: the main thread handles it in ordinary code
    os.kill(os.getpid(), sig)


def redeliver_swallowed_signals() -> None:
    """The safety net for every other place a signal's exception can be dropped (a finalizer or a weakref
    callback running when the signal is handled): a Terminated or KeyboardInterrupt that reaches
    sys.unraisablehook is sent again 20 ms later, from a helper thread, so that the main thread raises it in
    ordinary code."""
    import _thread

    previous = sys.unraisablehook
    if getattr(previous, "redelivers_signals", False):
        return

    def hook(unraisable):
        exc_type = unraisable.exc_type
        if exc_type is not None and issubclass(exc_type, (Terminated, KeyboardInterrupt)):
            sig = signal.SIGTERM if issubclass(exc_type, Terminated) else signal.SIGINT
            log.warning("%s was caught where it could not stop the run; delivering it again", sig.name)
            _thread.start_new_thread(_kill_later, (sig,))  # not threading.Thread: its start() waits in Python code
            return
        previous(unraisable)

    hook.redelivers_signals = True
    sys.unraisablehook = hook

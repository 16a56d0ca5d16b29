"""Signals around a commit point: SIGTERM/SIGINT that arrive while a publish is being committed wait until the
commit is done, so a run is either published (and the command says so) or not published at all.

Everywhere else a signal acts at once: SIGTERM raises job.errors.Terminated (job.cli installs the handler),
SIGINT raises KeyboardInterrupt, and both unwind through the `finally` clauses that remove partial files.
"""

import contextlib
import logging
import os
import signal

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
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if received and completed:
            log.warning("%s arrived while publishing; the publish completed first", signal.Signals(received[0]).name)
        elif received:
            signal.raise_signal(received[0])


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
def held_during_forks():
    """Hold SIGTERM/SIGINT while the block forks: their handlers only record them (a handler that runs inside
    an at-fork callback then loses nothing), and after the block, whatever happened in it, the first one is
    raised again, where its own handler acts as anywhere else. Not the signal mask: the C-level handler runs
    in whichever thread the kernel picks, and the main thread would still run the Python handler inside the
    callback. Children forked inside inherit the recording handlers: `child_signals` (a pool initializer)
    replaces them."""
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
    import sys

    from job.errors import Terminated

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

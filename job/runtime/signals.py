"""Signals around a commit point: SIGTERM/SIGINT that arrive while a publish is being committed wait until the
commit is done, so a run is either published (and the command says so) or not published at all.

Everywhere else a signal acts at once: SIGTERM raises job.errors.Terminated (job.cli installs the handler),
SIGINT raises KeyboardInterrupt, and both unwind through the `finally` clauses that remove partial files.
"""

import contextlib
import logging
import signal

log = logging.getLogger(__name__)

DEFERRED = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def deferred_signals():
    """Hold SIGTERM/SIGINT during the block; re-deliver them after it, unless the block completed, in which case
    the work they would have interrupted is done and the signal is only logged."""
    received: list[int] = []
    previous = {}
    try:
        for sig in DEFERRED:
            previous[sig] = signal.signal(sig, lambda signum, frame: received.append(signum))
    except ValueError:  # not the main thread: signals cannot be handled here anyway
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

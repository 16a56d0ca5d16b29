"""stdout is for machines, stderr for people.

`python -m job train|publish` writes only JSON lines to stdout, one per event (`run_started`, `epoch`,
`run_complete`, `run_published`, `run_failed`), so `make -s train | jq .` parses. Everything else (logs, the
per-epoch line, a progress bar on a terminal, anything a library prints, even from C) goes to stderr: at start
the real stdout is kept for events and file descriptor 1 is pointed at stderr. A reader that goes away (`| head
-1`) never changes the job's outcome: events after that are dropped.
"""

import os
import sys
import time

from job.gates.text import json_line
from job.runtime.redact import RedactingWriter, redact_value

_stream = None
_listeners: list = []  # in-process observers of every event (MLflow tracking), called after it is written


def subscribe(listener) -> None:
    """`listener(event, record)` for every later event, until unsubscribe(listener)."""
    _listeners.append(listener)


def unsubscribe(listener) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def claim_stdout() -> None:
    """Keep the process's stdout for events only; route fd 1 and sys.stdout to stderr."""
    global _stream
    if _stream is not None:
        return
    try:
        sys.stdout.flush()
        _stream = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8", closefd=True)
        os.dup2(2, 1)
    except (OSError, ValueError, AttributeError):  # started with stdout closed: events have nowhere to go
        _stream = open(os.devnull, "w")
    if not isinstance(sys.stderr, RedactingWriter):
        sys.stderr = RedactingWriter(sys.stderr)
    sys.stdout = sys.stderr


def emit(event: str, **fields) -> None:
    """One JSON line: {"event": ..., "time": ..., **fields}. Silently dropped once the reader is gone."""
    global _stream
    record = {"event": event, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **fields}
    line = json_line(redact_value(record), sort_keys=True, default=str) + "\n"  # the text gate's JSON form
    stream = _stream or sys.stdout
    try:
        stream.write(line)
        stream.flush()
    except (BrokenPipeError, ValueError, OSError):
        if stream is _stream:
            _stream = open(os.devnull, "w")
    for listener in list(_listeners):
        listener(event, record)

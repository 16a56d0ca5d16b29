"""The one confinement function: every name that comes from a store (a manifest path, latest.json's run id,
an S3 key below a prefix) passes `confine` before it becomes a path or a key.

A confined name is relative, '/'-separated, with no empty, '.' or '..' segment, no backslash, no control
character and at most MAX_NAME characters, so joined to a folder or a prefix it stays inside it. Symbolic
links are the locations' business (they never follow one: job.storage.local).
"""

import re

from job.errors import DataError

MAX_NAME = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class UnsafeName(DataError):
    """A name from a store that would leave the place it was read from (exit 3)."""


def confine(name, what: str = "name") -> str:
    """`name` itself when it is a safe relative name, else UnsafeName saying why."""
    if not isinstance(name, str):
        raise UnsafeName(f"{what} {name!r} is not a string")
    if not name or len(name) > MAX_NAME:
        raise UnsafeName(f"{what} {name[:80]!r} is empty or longer than {MAX_NAME} characters")
    if _CONTROL.search(name) or "\\" in name:
        raise UnsafeName(f"{what} {name[:80]!r} holds a control character or a backslash")
    if name.startswith("/") or any(part in ("", ".", "..") for part in name.split("/")):
        raise UnsafeName(f"{what} {name[:80]!r} is absolute or has an empty, '.' or '..' segment")
    return name


def confine_run_id(run_id, what: str = "run id") -> str:
    """A run id: one confined segment, no '/'."""
    confine(run_id, what)
    if "/" in run_id or run_id.startswith("."):
        raise UnsafeName(f"{what} {run_id[:80]!r} is not a single visible folder name")
    return run_id

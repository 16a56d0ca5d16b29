"""The JSON gate: every JSON document read from outside the process (a store's latest.json, manifest.json,
metrics.json, a --baseline, a --config file, a model's class_names metadata, TF_CONFIG, SageMaker's
hyperparameters.json and resourceconfig.json, a tracking server's answer) is parsed by `load_json`.

Bounded before and after parsing: at most `max_bytes` (a 150 MB baseline is refused from its size, not read
into 1 GB of objects) and at most `max_depth` levels of nesting (the C parser raises RecursionError on a
document of 100,000 `[`; code that walks a parsed document recursively would do the same later). NaN and
Infinity, which Python's json accepts and no other JSON parser does, are refused unless `allow_nan`.
Every failure is the caller's error type with one line naming the document.
"""

import json
from pathlib import Path

from job.errors import DataError, JobError

MAX_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 32


def _depth(value) -> int:
    """Nesting depth of a parsed document, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, level + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def load_json(
    raw,
    what: str,
    *,
    error: type[JobError] = DataError,
    max_bytes: int = MAX_BYTES,
    max_depth: int = MAX_DEPTH,
    allow_nan: bool = False,
    expect: type | tuple[type, ...] | None = None,
):
    """The parsed document `raw` (bytes or str), or `error` naming `what` and why it was refused."""
    if raw is None:
        raise error(f"{what}: no document")
    if len(raw) > max_bytes:
        raise error(f"{what}: {len(raw):,} bytes is over the {max_bytes:,}-byte limit for this document")
    try:
        text = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else raw
        value = json.loads(text, **({} if allow_nan else {"parse_constant": _no_constant}))
    except RecursionError:
        raise error(f"{what}: nested more than {max_depth} levels deep") from None
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise error(f"{what}: not valid JSON ({str(exc)[:120]})") from None
    if _depth(value) > max_depth:
        raise error(f"{what}: nested more than {max_depth} levels deep")
    if expect is not None and not isinstance(value, expect):
        names = " or ".join(t.__name__ for t in (expect if isinstance(expect, tuple) else (expect,)))
        raise error(f"{what}: expected a JSON {names.replace('dict', 'object').replace('list', 'array')}")
    return value


def read_json_file(
    path, what: str | None = None, *, error: type[JobError] = DataError, max_bytes: int = MAX_BYTES, **kwargs
):
    """load_json over a file, read with the size bound (never more than max_bytes + 1 bytes)."""
    path = Path(path)
    what = what or str(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(max_bytes + 1)
    except OSError as exc:
        raise error(f"{what}: cannot read ({exc.strerror or exc})") from None
    return load_json(raw, what, error=error, max_bytes=max_bytes, **kwargs)

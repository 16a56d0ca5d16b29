"""The JSON gate: every JSON document read from outside the process (a store's latest.json, manifest.json,
metrics.json, a --baseline, a --config file, a model's class_names metadata, TF_CONFIG, SageMaker's
hyperparameters.json and resourceconfig.json, a tracking server's answer) is parsed by `load_json`.

Bounded before and after parsing: at most `max_bytes` (a 150 MB baseline is refused from its size, not read
into 1 GB of objects) and at most `max_depth` levels of nesting (the C parser raises RecursionError on a
document of 100,000 `[`; code that walks a parsed document recursively would do the same later). NaN and
Infinity, which Python's json accepts and no other JSON parser does, are refused unless `allow_nan`, and so is a
string escape of a lone surrogate (`"\\ud800"`: valid JSON syntax, but no character; RFC 7493, I-JSON).
Every failure is the caller's error type with one line naming the document.
"""

import json
import re
from pathlib import Path

from job.errors import DataError, JobError

MAX_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 32


_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _walk(value) -> tuple[int, bool]:
    """Nesting depth of a parsed document and whether a string in it (key or value) holds a lone surrogate, without
    recursion."""
    deepest, surrogate, stack = 0, False, [(value, 1)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(node, dict):
            surrogate = surrogate or any(_SURROGATE.search(key) for key in node)
            children = node.values()
        else:
            children = node if isinstance(node, list) else ()
        for child in children:
            if isinstance(child, (dict, list)):
                stack.append((child, level + 1))
            elif isinstance(child, str) and not surrogate:
                surrogate = bool(_SURROGATE.search(child))
    if isinstance(value, str):
        surrogate = bool(_SURROGATE.search(value))
    return deepest, surrogate


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
    depth, surrogate = _walk(value)
    if depth > max_depth:
        raise error(f"{what}: nested more than {max_depth} levels deep")
    if surrogate:  # `"\ud800"` parses, but names no character: no file name, key or terminal can take it (I-JSON)
        raise error(f"{what}: a string holds an unpaired surrogate escape (\\ud800-\\udfff), which is not text")
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

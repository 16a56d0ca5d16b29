"""The class-name gate: a dataset's class folders and a model's `class_names` metadata become labels.txt
lines (Triton), keys of `predict --json`, log lines and text in the browser page. So every list of class
names is checked where it enters, in Python (here), Node (examples/contract/contract.mjs) and the page:

- a list of 1..MAX_CLASSES strings, each 1..MAX_LENGTH characters;
- printable and on one line: no control character, no line break, no Unicode format character (bidi
  overrides), no lone surrogate (a folder name that is not UTF-8), no leading or trailing white space;
- unique after Unicode NFC normalisation and case folding (two folders `cat` and `Cat` would be one key
  on a case-insensitive file system and look the same to a reader).
Markup (`<img onerror=...>`) is allowed as text: every renderer treats class names as text only.
"""

import re
import unicodedata

from job.errors import DataError
from job.gates.text import shown

MAX_CLASSES = 1000
MAX_LENGTH = 64
_BAD = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def class_name_problem(name) -> str | None:
    """Why `name` cannot be a class name, or None."""
    if not isinstance(name, str):
        return f"{shown(name, 40)} is not a string"
    if not name or len(name) > MAX_LENGTH:
        return f"'{shown(name, 40)}' is empty or longer than {MAX_LENGTH} characters"
    if _BAD.search(name) or any(unicodedata.category(c) in ("Cf", "Cs") for c in name):
        return f"'{shown(name, 40)}' holds a control, line-break or format character"
    if name != name.strip():
        return f"'{shown(name, 40)}' starts or ends with white space"
    return None


def check_class_names(names, what: str, *, count: int | None = None, error: type[Exception] = DataError) -> list[str]:
    """`names` as a list when it is a valid list of class names (of `count` entries when given), else `error`."""
    if not isinstance(names, (list, tuple)) or not names:
        raise error(f"{what}: class names must be a non-empty list")
    if len(names) > MAX_CLASSES:
        raise error(f"{what}: {len(names):,} class names is over the limit of {MAX_CLASSES}")
    for name in names:
        problem = class_name_problem(name)
        if problem:
            raise error(f"{what}: class name {problem}")
    seen: dict[str, str] = {}
    for name in names:
        key = unicodedata.normalize("NFC", name).casefold()
        if key in seen:
            raise error(f"{what}: class names '{shown(seen[key], 40)}' and '{shown(name, 40)}' are the same name")
        seen[key] = name
    if count is not None and len(names) != count:
        raise error(f"{what}: {len(names)} class names for {count} model outputs")
    return list(names)

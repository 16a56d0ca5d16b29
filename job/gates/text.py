"""The text gate: anything read from outside (a file name, a tar member, a class name, a store URI, a
message from a server) is passed through `shown` before it reaches a terminal, a log line or a CI log.

What it neutralises, and why:
- C0/C1 control characters, DEL: terminal escape sequences (`\\x1b[2J`, OSC 8 links, title changes) and
  carriage returns that overwrite a line;
- every line break (`\\n`, `\\r`, U+0085, U+2028, U+2029): a name with a newline forges a second `error:` line,
  or starts a line that GitHub Actions reads as a workflow command;
- Unicode format characters (category Cf: bidi overrides U+202A-U+202E / U+2066-U+2069, zero-width joiners):
  text that displays in another order than it reads (Trojan Source);
- lone surrogates (category Cs: the bytes of a file or member name that are not UTF-8): a strict stream
  (stdout) would raise UnicodeEncodeError on them;
- `::`: GitHub Actions' workflow commands (`::error::`, `::stop-commands::`, `::add-mask::`) start with it,
  and runners honour them anywhere a log line begins; the second colon is escaped. The runner's older form,
  `##[command]`, is honoured anywhere in a line: its second `#` is escaped.
Each is written as a visible escape (`\\x0a`, `\\u202e`, `:\\x3a`, `#\\x23[`), so the reader still sees what
was there.
`shown` also bounds the length (a 1 MB name is one line of `limit` characters plus `...`). `json_line` is the
same gate for the JSON lines on stdout (events, `--json` output).

Every JSON the job prints or writes for others (stdout lines, `runs show`, metrics.json, the server's answers) is
strict JSON: a NaN or infinite number (a diverged run's loss, a model's NaN output) is written `null`
(`finite`), never the tokens NaN/Infinity that Python's json writes and no other parser reads.
"""

import json
import math
import re
import unicodedata

DEFAULT_LIMIT = 300
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ESCAPED = ("Cf", "Cs")  # format characters, lone surrogates


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def shown(text, limit: int = DEFAULT_LIMIT) -> str:
    """`text` as one safe line: controls, line breaks and format characters escaped, `::` broken, at most
    `limit` characters of the original (then `...`). Non-strings are shown through repr()."""
    if not isinstance(text, str):
        text = repr(text)
    cut = len(text) > limit
    text = text[:limit]
    out = "".join(_escape(c) if _CONTROL.match(c) or unicodedata.category(c) in _ESCAPED else c for c in text)
    out = out.replace("::", ":\\x3a").replace("##[", "#\\x23[")
    return out + ("..." if cut else "")


def printable(text: str) -> str:
    """Multi-line text read from a store (a model card, a JSON document shown whole), safe for a terminal:
    newlines and tabs kept, every other control and format character escaped, and no line can start a
    workflow command."""
    return "\n".join(shown(line, limit=len(line) + 1) for line in text.replace("\t", "    ").split("\n"))


def markdown_cell(text, limit: int = DEFAULT_LIMIT) -> str:
    """`shown`, plus what would break a Markdown table cell or start markup: `|`, backticks, `<` `>`, `[` `]`."""
    out = shown(text, limit)
    for char, entity in (
        ("&", "&amp;"),
        ("|", "&#124;"),
        ("`", "&#96;"),
        ("<", "&lt;"),
        (">", "&gt;"),
        ("[", "&#91;"),
        ("]", "&#93;"),
    ):
        out = out.replace(char, entity)
    return out


def finite(value):
    """`value` with every NaN or infinite float (numpy's included) replaced by None, through dicts, lists, tuples."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def json_text(value, **dumps) -> str:
    """json.dumps of `value` as strict JSON: non-finite numbers written null (`finite`, walked only when one is
    there: the server answers through this)."""
    try:
        return json.dumps(value, allow_nan=False, **dumps)
    except ValueError:  # "Out of range float values are not JSON compliant" (a circular reference raises it too)
        return json.dumps(finite(value), allow_nan=False, **dumps)


def json_line(value, **dumps) -> str:
    """`value` as one strict JSON line for stdout (`json_text`), where a CI runner reads it too: ASCII (every
    control, line break, format and non-ASCII character escaped by json.dumps), and `##[` written `#\\u0023[`,
    which decodes to the same text. (A JSON line starts with `{` or `[`, so it never starts a `::` workflow
    command.)"""
    return json_text(value, ensure_ascii=True, **dumps).replace("##[", "#\\u0023[")

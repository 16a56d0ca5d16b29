"""The one redaction function: what the job prints or publishes never carries a secret a user passed in a URI.

A password in a URI's userinfo (`http://user:secret@host`, a common way to pass proxy or MLflow credentials)
and the value of a credential-like query parameter (`?token=...`, presigned `X-Amz-Signature=...`) become
`***`. Every printer and writer goes through it: the config line, `--print-config`, `--dry-run`, events, error
lines, log records, `config.json`, MLflow params and the model card. The job itself keeps the real value.
"""

import re
from typing import Any

MASK = "***"
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/@\s:'\"]*):(?P<password>[^/@\s'\"]+)@")
_QUERY = re.compile(
    r"(?P<key>[?&;](?:[A-Za-z0-9_.-]*(?:token|secret|password|passwd|pwd|signature|credential|sig|api[_-]?key|"
    r"access[_-]?key|auth))=)(?P<value>[^&;#\s'\"]+)",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """`text` with every URI password and credential-like query value replaced by ***."""
    if "://" not in text and "=" not in text:
        return text
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    return _QUERY.sub(lambda m: f"{m['key']}{MASK}", text)


def redact_value(value: Any) -> Any:
    """redact() applied to every string inside dicts, lists and tuples (keys too)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_value(k): redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_value(v) for v in value)
    return value


class RedactingWriter:
    """A text stream that passes every write through redact(): sys.stdout and sys.stderr of the job, so that a
    library printing its own URL (MLflow prints "View run at: <tracking URI>") cannot leak a password."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(redact(text))
        return len(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)

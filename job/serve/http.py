"""The ASGI plumbing under the routes: the one HTTP error type, the bounded body reader, and the answers.

A body is refused from its Content-Length before a byte is read, and a body without one (chunked) is read only
until it passes the bound: a 50 MB upload costs the server at most `max_bytes` of memory, never more.
"""

import re

from job.gates.text import json_text, shown

_COUNT = re.compile(r"[0-9]{1,18}")  # ASCII digits only: str.isdigit() also accepts '¹', '٣', which int() refuses


class HTTPError(Exception):
    """An answer other than 200: the status and one line for the client (shown through the text gate)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = shown(message)


def byte_count(value: str) -> int | None:
    """A header's byte count: 1 to 18 ASCII digits, else None (never an exception)."""
    return int(value) if _COUNT.fullmatch(value) else None


def header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


async def read_body(scope, receive, max_bytes: int) -> bytes:
    declared = header(scope, b"content-length")
    if declared is not None:
        length = byte_count(declared)
        if length is None:
            raise HTTPError(400, "Content-Length is not a number")
        if length > max_bytes:
            raise HTTPError(413, f"the body is {length:,} bytes; the limit is {max_bytes:,}")
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HTTPError(499, "the client went away")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise HTTPError(413, f"the body is over the {max_bytes:,}-byte limit")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def send(send_fn, status: int, body: bytes, content_type: bytes = b"application/json", extra=()) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *extra]
    await send_fn({"type": "http.response.start", "status": status, "headers": headers})
    await send_fn({"type": "http.response.body", "body": body})


def json_bytes(value) -> bytes:
    return json_text(value, separators=(",", ":")).encode()  # strict JSON: NaN/Infinity written null


async def send_json(send_fn, status: int, value, extra=()) -> None:
    await send(send_fn, status, json_bytes(value), extra=extra)


async def send_error(send_fn, error: HTTPError) -> None:
    extra = [(b"connection", b"close")] if error.status == 413 else []  # the rest of the body is never read
    extra += [(b"retry-after", b"1")] if error.status in (429, 503) else []
    await send_json(send_fn, error.status, {"error": error.message}, extra)

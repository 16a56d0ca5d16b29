"""What an S3 request's bytes go through on their way in and out: a GET's body streamed and hashed, refused when it
ends before its Content-Length (`CutShort`: the caller fetches it again), Content-MD5 for every PUT, and the one
test of a 404 for a key."""

import base64
import hashlib
import io

from job.errors import DataError


class CutShort(Exception):
    """A response body that ended before its Content-Length (a dropped connection, a proxy cutting it)."""


def _streaming_errors() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import ConnectionClosedError, IncompleteReadError, ReadTimeoutError, ResponseStreamingError
    from urllib3.exceptions import HTTPError

    return (ConnectionClosedError, IncompleteReadError, ReadTimeoutError, ResponseStreamingError, HTTPError)


def md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


def is_missing(exc: Exception) -> bool:
    """A 404 for a key (NoSuchKey, or a HEAD's bare 404), as opposed to a missing bucket (NoSuchBucket)."""
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return False
    code = exc.response.get("Error", {}).get("Code", "")
    return code in ("NoSuchKey", "404", "NotFound") and code != "NoSuchBucket"


def stream_body(obj: dict, out, limit: int, where: str) -> str:
    """Stream a GET's body (`obj`: get_object's answer for `where`) into `out`, hashing it; returns the sha256.
    CutShort when fewer bytes than its Content-Length arrive; DataError over `limit`."""
    h, size = hashlib.sha256(), 0
    try:
        for block in iter(lambda: obj["Body"].read(1 << 20), b""):
            size += len(block)
            if size > limit:
                raise DataError(f"{where} is over the {limit:,}-byte limit")
            h.update(block)
            out.write(block)
    except _streaming_errors() as exc:
        raise CutShort(f"{type(exc).__name__} after {size:,} bytes") from None
    finally:
        obj["Body"].close()
    if size != obj["ContentLength"]:
        raise CutShort(f"{size:,} of {obj['ContentLength']:,} bytes")
    return h.hexdigest()


class Buffer(io.BytesIO):
    """A byte sink that keeps its content after the `with` block closes it."""

    data = b""

    def close(self) -> None:
        self.data = self.getvalue()
        super().close()

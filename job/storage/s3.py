"""An S3 prefix as a location (AWS S3, Ceph RGW, MinIO, ...): the same interface as a local folder.

One key function, one "is it missing" test, one pagination. Every name passes job.runtime.names.confine before
it becomes a key, and every key listed from the store is confined before it becomes a name. Object metadata is
never trusted as proof of content: readers hash what they download (job.storage.runs).

Uploads prove what arrived: every PUT (and every part of a multipart upload) carries Content-MD5, which the
server checks before it stores anything, and a published run is read back and hashed before it is marked
complete. A body that arrives shorter than its Content-Length is fetched again (bounded), never used.

    s3.py         S3Location: keys, reads (GET with retries on a cut body), listing, single writes, uploads
    s3body.py     a GET's body streamed and hashed, Content-MD5, the 404 test
    s3publish.py  the all-or-nothing writes: a run folder (publish_tree) and the pointer (swap)
"""

import contextlib
import logging
import mimetypes
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from job.errors import DataError, StorageError
from job.gates.text import shown
from job.runtime.names import UnsafeName, confine
from job.storage.files import sha256_file
from job.storage.local import MAX_READ
from job.storage.location import Location, Missing
from job.storage.s3body import Buffer, CutShort, is_missing, md5_b64, stream_body
from job.storage.s3client import (
    CONTENT_TYPES,
    MULTIPART_THRESHOLD,
    S3Options,
    explain,
    make_client,
    parse_uri,
    s3_errors,
)
from job.storage.s3publish import publish_tree, swap

log = logging.getLogger(__name__)


class S3Location(Location):
    def __init__(self, uri: str, options: S3Options | None = None, what: str = "store"):
        self.bucket, prefix = parse_uri(uri)
        if not self.bucket:
            raise StorageError(f"{uri!r}: no bucket; use s3://bucket/prefix")
        self.prefix = confine(prefix, f"the prefix of {uri}") if prefix else ""
        self.options = options or S3Options()
        self.uri = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.what = what
        self.client = make_client(self.options)
        self.requests = 0
        self.client.meta.events.register("before-send.s3", self._count)

    def _count(self, **_):
        self.requests += 1

    def key(self, name: str = "") -> str:
        return "/".join(p for p in (self.prefix, confine(name) if name else "") if p)

    def describe(self, name: str = "") -> str:
        return f"s3://{self.bucket}/{self.key(name)}"

    def fail(self, exc: Exception, action: str) -> StorageError:
        return StorageError(f"{self.what}: " + explain(exc, self.client, self.bucket, action))

    @contextlib.contextmanager
    def storage_errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except s3_errors() as exc:
            raise self.fail(exc, action) from None

    def pages(self, prefix: str, delimiter: str = "") -> Iterator[dict]:
        kwargs = {"Bucket": self.bucket, "Prefix": prefix, **({"Delimiter": delimiter} if delimiter else {})}
        with self.storage_errors(f"list {prefix or '/'} in"):
            yield from self.client.get_paginator("list_objects_v2").paginate(**kwargs)

    # ------------------------------------------------------------------ reading

    def get_object(self, name: str, limit: int) -> dict | None:
        with self.storage_errors(f"read {self.key(name)} from"):
            try:
                obj = self.client.get_object(Bucket=self.bucket, Key=self.key(name))
            except s3_errors()[1] as exc:
                if is_missing(exc):
                    return None
                raise
        if obj["ContentLength"] > limit:
            obj["Body"].close()
            raise DataError(f"{self.describe(name)} is {obj['ContentLength']:,} bytes, over the {limit:,}-byte limit")
        return obj

    def _fetch(self, name: str, limit: int, open_sink: Callable[[], object]) -> tuple[object, str] | None:
        """GET `name` into a fresh sink (None: missing). A body cut short is fetched again, up to the retry
        count (--s3-retries), then a StorageError: a partial body is never returned as the object."""
        attempts = max(self.options.retries, 1)
        for attempt in range(1, attempts + 1):
            obj = self.get_object(name, limit)
            if obj is None:
                return None
            with self.storage_errors(f"read {self.key(name)} from"), open_sink() as sink:
                try:
                    return sink, stream_body(obj, sink, limit, self.describe(name))
                except CutShort as cut:
                    problem = str(cut)
            log.warning("%s: body cut short (%s), attempt %d of %d", self.describe(name), problem, attempt, attempts)
            if attempt < attempts:
                time.sleep(min(0.1 * 2**attempt, 2.0))
        raise StorageError(
            f"{self.what}: {shown(self.describe(name))}: the body was cut short on each of {attempts} attempts "
            f"(last: {problem}); check the network or proxy to {self.client.meta.endpoint_url}, or raise --s3-retries"
        )

    def read(self, name: str, limit: int = MAX_READ) -> bytes | None:
        got = self._fetch(name, limit, Buffer)
        return None if got is None else got[0].data

    def copy_out(self, name: str, dest: Path, limit: int) -> str:
        """Download `name` to `dest` (a new file), hashing as it streams; returns the sha256. A body cut short
        is fetched again (bounded); `dest` then holds only the complete body."""

        def sink():
            if tries:  # a cut-short attempt before: start again from an empty file
                Path(dest).unlink(missing_ok=True)
            tries.append(1)
            return open(dest, "xb")

        tries: list[int] = []
        got = self._fetch(name, limit, sink)
        if got is None:
            raise Missing(f"{self.describe(name)} is missing")
        return got[1]

    def hash(self, name: str, limit: int) -> str | None:
        with tempfile.TemporaryDirectory(prefix="job-hash-") as tmp:
            try:
                return self.copy_out(name, Path(tmp) / "object", limit)
            except Missing:
                return None

    def head(self, name: str) -> dict | None:
        with self.storage_errors(f"read {self.key(name)} from"):
            try:
                return self.client.head_object(Bucket=self.bucket, Key=self.key(name))
            except s3_errors()[1] as exc:
                if is_missing(exc):
                    return None
                raise

    # ------------------------------------------------------------------ listing

    def listing(self, prefix: str = "") -> dict[str, int]:
        """name -> size of every object below `prefix`; a key that is not a confined name below it (a `..`
        segment, a double slash) is listed under a marker name with size -1, never turned into a path."""
        base = self.key(prefix) + "/" if (prefix or self.prefix) else ""
        out: dict[str, int] = {}
        for page in self.pages(base):
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(base) :]
                try:
                    out[f"{prefix}/{confine(rel)}" if prefix else confine(rel)] = obj["Size"]
                except UnsafeName:  # the marker reaches messages: through the text gate
                    marker = f"<unsafe key {shown(repr(obj['Key']), 200)}>"
                    out[f"{prefix}/{marker}" if prefix else marker] = -1
        return out

    def folders(self) -> list[str]:
        base = self.key() + "/" if self.prefix else ""
        names = (
            p["Prefix"][len(base) :].rstrip("/")
            for page in self.pages(base, "/")
            for p in page.get("CommonPrefixes", [])
        )
        return sorted(n for n in names if n and not n.startswith(".") and "/" not in n)

    def empty(self) -> bool:
        """No object at all under the prefix (one listing request of one key)."""
        base = self.key() + "/" if self.prefix else ""
        with self.storage_errors(f"list {base or '/'} in"):
            page = self.client.list_objects_v2(Bucket=self.bucket, Prefix=base, MaxKeys=1)
        return not page.get("Contents")

    # ------------------------------------------------------------------ writing

    def probe(self) -> None:
        """Bucket exists and is writable: write and delete a small object under the prefix. Short timeouts."""
        quick = make_client(self.options, attempts=2, timeout=min(self.options.timeout, 5.0))
        key = self.key(f".probe-{secrets.token_hex(6)}")
        try:
            quick.head_bucket(Bucket=self.bucket)
            quick.put_object(Bucket=self.bucket, Key=key, Body=b"probe")
            quick.delete_object(Bucket=self.bucket, Key=key)
        except s3_errors() as exc:
            raise StorageError(f"{self.what}: " + explain(exc, quick, self.bucket, "write to")) from None

    def write(self, name: str, data: bytes, **conditions) -> None:
        with self.storage_errors(f"write {self.key(name)} to"):
            self.client.put_object(
                Bucket=self.bucket, Key=self.key(name), Body=data, ContentMD5=md5_b64(data), **conditions
            )

    def put_file(self, name: str, src: Path) -> str:
        """Upload with its content type and sha256 (a hint for people; readers hash the content themselves).
        Every request carries Content-MD5 of its bytes, so the server refuses bytes changed on the way (one
        PUT, or above MULTIPART_THRESHOLD one per part). Returns the sha256 of what was sent."""
        ctype = CONTENT_TYPES.get(src.suffix) or mimetypes.guess_type(src.name)[0] or "application/octet-stream"
        digest, key = sha256_file(src), self.key(name)
        args = {"Bucket": self.bucket, "Key": key, "ContentType": ctype, "Metadata": {"sha256": digest}}
        with self.storage_errors(f"write {key} to"):
            if src.stat().st_size <= MULTIPART_THRESHOLD:
                data = src.read_bytes()
                self.client.put_object(Body=data, ContentMD5=md5_b64(data), **args)
                return digest
            upload = self.client.create_multipart_upload(**args)["UploadId"]
            try:
                parts = []
                with src.open("rb") as fh:
                    for number, data in enumerate(iter(lambda: fh.read(MULTIPART_THRESHOLD), b""), start=1):
                        part = self.client.upload_part(
                            Bucket=self.bucket, Key=key, UploadId=upload, PartNumber=number, Body=data,
                            ContentMD5=md5_b64(data),
                        )  # fmt: skip
                        parts.append({"PartNumber": number, "ETag": part["ETag"]})
                self.client.complete_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
                )
            except BaseException:
                with contextlib.suppress(*s3_errors()):
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload)
                raise
        return digest

    def check_arrived(self, name: str, sha256: str, size: int) -> None:
        """Read `name` back and hash it: StorageError unless the store holds exactly the bytes that were sent
        (a server or proxy that answered 200 to other bytes, or to none)."""
        try:
            found = self.hash(name, size)
            what = "nothing" if found is None else "other bytes"
        except DataError:  # larger than what was sent
            found, what = None, "a larger object"
        if found != sha256:
            raise StorageError(
                f"{self.what}: {shown(self.describe(name))} did not arrive intact: read back, the store holds "
                f"{what} where {size:,} bytes (sha256 {sha256[:12]}...) were sent and acknowledged; check the "
                f"endpoint {self.client.meta.endpoint_url} and anything between (a proxy), then publish again"
            )

    def delete(self, name: str) -> None:
        self.delete_keys([self.key(name)], quiet=True)

    def delete_keys(self, keys: list[str], quiet: bool = False) -> None:
        try:
            for i in range(0, len(keys), 1000):
                chunk = [{"Key": k} for k in keys[i : i + 1000]]
                if chunk:
                    self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": True})
        except s3_errors() as exc:
            if not quiet:
                raise self.fail(exc, "delete from") from None
            log.warning("could not delete %d objects from %s (%s)", len(keys), self.uri, type(exc).__name__)

    def staging_dir(self, name: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"job-{name}-"))

    def publish_tree(self, staged: Path, name: str, commit: Callable[[], None], last: str) -> str:
        """All or nothing, read back before `last` (the manifest) is written (job.storage.s3publish)."""
        return publish_tree(self, staged, name, commit, last)

    def swap(self, name: str, decide: Callable[[bytes | None], bytes | None], attempts: int = 8) -> None:
        """Compare-and-swap on the object's ETag (job.storage.s3publish)."""
        swap(self, name, decide, attempts)

"""An S3 prefix as a location (AWS S3, Ceph RGW, MinIO, ...): the same interface as a local folder.

One key function, one "is it missing" test, one pagination. Every name passes job.runtime.names.confine before
it becomes a key, and every key listed from the store is confined before it becomes a name. Object metadata is
never trusted as proof of content: readers hash what they download (job.storage.runs).
"""

import contextlib
import hashlib
import logging
import mimetypes
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from job.errors import DataError, StorageError
from job.runtime.names import UnsafeName, confine
from job.runtime.signals import deferred_signals
from job.storage.files import sha256_file
from job.storage.local import MAX_READ
from job.storage.location import Location, Missing
from job.storage.s3client import (
    CONTENT_TYPES,
    MULTIPART_THRESHOLD,
    S3Options,
    explain,
    make_client,
    parse_uri,
    s3_errors,
)

log = logging.getLogger(__name__)


def is_missing(exc: Exception) -> bool:
    """A 404 for a key (NoSuchKey, or a HEAD's bare 404), as opposed to a missing bucket (NoSuchBucket)."""
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return False
    code = exc.response.get("Error", {}).get("Code", "")
    return code in ("NoSuchKey", "404", "NotFound") and code != "NoSuchBucket"


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
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except s3_errors() as exc:
            raise self.fail(exc, action) from None

    def _pages(self, prefix: str, delimiter: str = "") -> Iterator[dict]:
        kwargs = {"Bucket": self.bucket, "Prefix": prefix, **({"Delimiter": delimiter} if delimiter else {})}
        with self._errors(f"list {prefix or '/'} in"):
            yield from self.client.get_paginator("list_objects_v2").paginate(**kwargs)

    # ------------------------------------------------------------------ reading

    def _get(self, name: str, limit: int) -> dict | None:
        with self._errors(f"read {self.key(name)} from"):
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

    def read(self, name: str, limit: int = MAX_READ) -> bytes | None:
        obj = self._get(name, limit)
        if obj is None:
            return None
        with self._errors(f"read {self.key(name)} from"):
            return obj["Body"].read(limit + 1)[:limit]

    def copy_out(self, name: str, dest: Path, limit: int) -> str:
        """Download `name` to `dest` (a new file), hashing as it streams; returns the sha256."""
        obj = self._get(name, limit)
        if obj is None:
            raise Missing(f"{self.describe(name)} is missing")
        h, size = hashlib.sha256(), 0
        with self._errors(f"read {self.key(name)} from"), open(dest, "xb") as out:
            for block in iter(lambda: obj["Body"].read(1 << 20), b""):
                size += len(block)
                if size > limit:
                    raise DataError(f"{self.describe(name)} is over the {limit:,}-byte limit")
                h.update(block)
                out.write(block)
        return h.hexdigest()

    def hash(self, name: str, limit: int) -> str | None:
        with tempfile.TemporaryDirectory(prefix="job-hash-") as tmp:
            try:
                return self.copy_out(name, Path(tmp) / "object", limit)
            except Missing:
                return None

    def head(self, name: str) -> dict | None:
        with self._errors(f"read {self.key(name)} from"):
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
        for page in self._pages(base):
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(base) :]
                try:
                    out[f"{prefix}/{confine(rel)}" if prefix else confine(rel)] = obj["Size"]
                except UnsafeName:
                    out[f"{prefix}/<unsafe key {obj['Key']!r}>" if prefix else f"<unsafe key {obj['Key']!r}>"] = -1
        return out

    def folders(self) -> list[str]:
        base = self.key() + "/" if self.prefix else ""
        names = (
            p["Prefix"][len(base) :].rstrip("/")
            for page in self._pages(base, "/")
            for p in page.get("CommonPrefixes", [])
        )
        return sorted(n for n in names if n and not n.startswith(".") and "/" not in n)

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
        with self._errors(f"write {self.key(name)} to"):
            self.client.put_object(Bucket=self.bucket, Key=self.key(name), Body=data, **conditions)

    def put_file(self, name: str, src: Path) -> None:
        """Upload with its content type and sha256 (a hint for people; readers hash the content themselves)."""
        from boto3.s3.transfer import TransferConfig

        ctype = CONTENT_TYPES.get(src.suffix) or mimetypes.guess_type(src.name)[0] or "application/octet-stream"
        config = TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_THRESHOLD, use_threads=True
        )
        with self._errors(f"write {self.key(name)} to"):
            self.client.upload_file(
                str(src),
                self.bucket,
                self.key(name),
                ExtraArgs={"ContentType": ctype, "Metadata": {"sha256": sha256_file(src)}},
                Config=config,
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
        """Upload every file of `staged` under `name/`, the file `last` (the manifest) after all others, then
        `commit()`; an earlier folder of that name is first un-completed (its `last` removed) and removed.
        On any failure the objects written are removed (`last` first) and nothing else changed."""
        run_prefix, written = self.key(name), []
        files = sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file())
        started, requests0 = time.perf_counter(), self.requests
        try:
            previous = [o["Key"] for page in self._pages(run_prefix + "/") for o in page.get("Contents", [])]
            if previous:
                log.info("replacing the %d objects of an earlier run %s", len(previous), self.describe(name))
                self.delete_keys([k for k in previous if k.endswith("/" + last)])
                self.delete_keys(previous)
            for rel in [f for f in files if f != last]:
                self.put_file(f"{name}/{rel}", staged / rel)
                written.append(f"{run_prefix}/{rel}")
            with deferred_signals():  # the commit: `last` marks the folder complete, then commit() (the pointer)
                written.append(f"{run_prefix}/{last}")
                self.put_file(f"{name}/{last}", staged / last)
                commit()
        except BaseException:
            # `last` first, so that a partially removed run never looks complete
            self.delete_keys(sorted(written, key=lambda k: not k.endswith("/" + last)), quiet=True)
            raise
        seconds = time.perf_counter() - started
        total = sum((staged / rel).stat().st_size for rel in files)
        self.last_upload = {
            "bytes": total,
            "objects": len(files),
            "seconds": round(seconds, 3),
            "mb_per_s": round(total / 1e6 / max(seconds, 1e-9), 2),
            "requests": self.requests - requests0,
        }
        log.info("published %d objects (%.1f MB) to %s in %.2fs", len(files), total / 1e6, self.describe(name), seconds)
        return self.describe(name)

    def swap(self, name: str, decide: Callable[[bytes | None], bytes | None], attempts: int = 8) -> None:
        """Compare-and-swap `name`: read it with its ETag, `decide(current)` the new content (None: keep), write
        it with If-Match (If-None-Match: * where there is none). A 409/412 means another writer moved it in
        between: read again. Stores without conditional writes (501) get a plain write, logged."""
        from botocore.exceptions import ClientError

        for _ in range(attempts):
            obj = self._get(name, MAX_READ)
            etag = obj["ETag"] if obj else None
            with self._errors(f"read {self.key(name)} from"):
                current = obj["Body"].read() if obj else None
            new = decide(current)
            if new is None:
                return
            condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
            try:
                self.client.put_object(
                    Bucket=self.bucket, Key=self.key(name), Body=new, ContentType="application/json", **condition
                )
                return
            except ClientError as exc:
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if exc.response.get("Error", {}).get("Code") == "NotImplemented" or status == 501:
                    log.warning("this S3 store has no conditional writes; %s written unconditionally", name)
                    self.write(name, new)
                    return
                if status not in (409, 412):
                    raise self.fail(exc, f"write {self.key(name)} to") from None
        raise StorageError(
            f"{self.describe(name)} kept changing under {attempts} attempts to update it; publish again to move it"
        )

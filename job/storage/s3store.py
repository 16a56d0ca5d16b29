"""S3Store: publish a finished run to s3://bucket/prefix. Objects first, manifest.json last (the completion
marker), then latest.json; on failure the objects written are removed and latest.json is unchanged."""

import json
import logging
import mimetypes
import secrets
import tempfile
import time
from pathlib import Path

from job.errors import StorageError
from job.runtime.signals import deferred_signals
from job.storage.files import sha256_file
from job.storage.manifest import MANIFEST, run_files
from job.storage.pointer import LATEST, latest_record, should_replace
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


class S3Store:
    def __init__(self, uri: str, options: S3Options | None = None):
        self.bucket, self.prefix = parse_uri(uri)
        if not self.bucket:
            raise StorageError(f"--out {uri!r}: no bucket; use s3://bucket/prefix")
        self.options = options or S3Options()
        self.uri = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.client = make_client(self.options)
        self.requests = 0
        self.client.meta.events.register("before-send.s3", self._count)

    def _count(self, **_):
        self.requests += 1

    def _key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def probe(self) -> None:
        """Bucket exists and is writable: write and delete a small object under the prefix. Short timeouts."""
        quick = make_client(self.options, attempts=2, timeout=min(self.options.timeout, 5.0))
        key = self._key(f".probe-{secrets.token_hex(6)}")
        try:
            quick.head_bucket(Bucket=self.bucket)
            quick.put_object(Bucket=self.bucket, Key=key, Body=b"probe")
            quick.delete_object(Bucket=self.bucket, Key=key)
        except s3_errors() as exc:
            raise StorageError(explain(exc, quick, self.bucket, "write to")) from None

    def staging_dir(self, run_id: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"job-{run_id}-"))

    def list_keys(self, prefix: str) -> list[str]:
        keys = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            keys += [obj["Key"] for obj in page.get("Contents", [])]
        return keys

    def _delete(self, keys: list[str]) -> None:
        for i in range(0, len(keys), 1000):
            chunk = keys[i : i + 1000]
            if chunk:
                self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True}
                )

    def upload(self, path: Path, key: str) -> None:
        from boto3.s3.transfer import TransferConfig

        ctype = CONTENT_TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        self.client.upload_file(
            str(path),
            self.bucket,
            key,
            ExtraArgs={"ContentType": ctype, "Metadata": {"sha256": sha256_file(path)}},
            Config=TransferConfig(
                multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_THRESHOLD, use_threads=True
            ),
        )

    def publish(self, run_dir: Path, run_id: str, summary: dict) -> str:
        """Objects, then manifest.json (the completion marker), then latest.json. All or nothing."""
        run_prefix = self._key(run_id)
        run_uri = f"s3://{self.bucket}/{run_prefix}"
        written: list[str] = []
        started, requests0 = time.perf_counter(), self.requests
        total_bytes = 0
        try:
            previous = self.list_keys(run_prefix + "/")
            if previous:  # same run id again: un-complete the old run first, then remove it whole
                log.info("replacing the %d objects of an earlier run %s", len(previous), run_uri)
                self._delete([k for k in previous if k.endswith("/" + MANIFEST)])
                self._delete(previous)
            for rel in run_files(run_dir):
                key = f"{run_prefix}/{rel.as_posix()}"
                self.upload(run_dir / rel, key)
                written.append(key)
                total_bytes += (run_dir / rel).stat().st_size
            manifest_key = f"{run_prefix}/{MANIFEST}"
            record = latest_record(run_id, run_uri, summary)
            with deferred_signals():  # the commit: the manifest marks the run complete, latest.json points to it
                written.append(manifest_key)
                self.upload(run_dir / MANIFEST, manifest_key)
                self._move_pointer(record)
        except BaseException as exc:
            self._cleanup(written)
            if not isinstance(exc, s3_errors() + (OSError,)):
                raise  # a signal (or a bug): the partial objects are gone, nothing is published
            message = explain(exc, self.client, self.bucket, f"publish run {run_id} to")
            raise StorageError(f"{message}; no manifest was written and latest.json is unchanged") from None
        seconds = time.perf_counter() - started
        summary["upload"] = {
            "bytes": total_bytes,
            "objects": len(written) + 1,
            "seconds": round(seconds, 3),
            "mb_per_s": round(total_bytes / 1e6 / max(seconds, 1e-9), 2),
            "requests": self.requests - requests0,
        }
        log.info(
            "published %d objects (%.1f MB) to %s in %.2fs, %d requests",
            len(written),
            total_bytes / 1e6,
            run_uri,
            seconds,
            self.requests - requests0,
        )
        return run_uri

    def _move_pointer(self, record: dict, attempts: int = 8) -> None:
        """Compare-and-swap latest.json: read it with its ETag, keep it if it names a run that finished later,
        else write it with If-Match (If-None-Match: * where there is none). A 412 means another publisher moved
        it in between: read again. Stores without conditional writes (501) get a plain write, logged."""
        from botocore.exceptions import ClientError

        key, body = self._key(LATEST), json.dumps(record, indent=2).encode()
        for _ in range(attempts):
            try:
                current = self.client.get_object(Bucket=self.bucket, Key=key)
                etag, pointer = current["ETag"], json.loads(current["Body"].read())
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in ("NoSuchKey", "404"):
                    raise
                etag, pointer = None, None
            except ValueError:  # a damaged pointer is replaced
                etag, pointer = current["ETag"], None
            if not should_replace(pointer, record):
                log.info("latest.json stays at %s (finished later than %s)", pointer.get("run_id"), record["run_id"])
                return
            condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
            try:
                self.client.put_object(
                    Bucket=self.bucket, Key=key, Body=body, ContentType="application/json", **condition
                )
                return
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if code in ("NotImplemented",) or status == 501:
                    log.warning("this S3 store has no conditional writes; latest.json written unconditionally")
                    self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/json")
                    return
                if status not in (409, 412):
                    raise
        raise StorageError(
            f"latest.json in s3://{self.bucket}/{self.prefix} kept changing under {attempts} "
            "attempts to update it; the run is published, publish it again to move the pointer"
        )

    def _cleanup(self, keys: list[str]) -> None:
        try:
            # the manifest first, so that a partially removed run never looks complete
            self._delete(sorted(keys, key=lambda k: not k.endswith("/manifest.json")))
        except s3_errors() as exc:
            log.warning(
                "clean-up of %d partial objects failed (%s); they are incomplete (no manifest)",
                len(keys),
                type(exc).__name__,
            )

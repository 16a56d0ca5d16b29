"""S3-compatible storage (AWS S3, Ceph RGW, MinIO, ...): artifact store, data source, checkpoint blobs.

Credentials come only from boto3's default chain (environment, shared profile, instance / IRSA roles)
and are never logged or written anywhere. The endpoint comes from --s3-endpoint or boto3's own
AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL. Flexible checksums are sent only when required: several
S3-compatible servers reject the CRC headers that boto3 >= 1.36 sends by default.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mimetypes
import os
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from job.errors import DataError, StorageError
from job.manifest import sha256_file

log = logging.getLogger(__name__)

CONTENT_TYPES = {".json": "application/json", ".png": "image/png", ".txt": "text/plain; charset=utf-8",
                 ".csv": "text/csv; charset=utf-8", ".md": "text/markdown; charset=utf-8",
                 ".onnx": "application/octet-stream", ".keras": "application/zip", ".pb": "application/octet-stream"}
MULTIPART_THRESHOLD = 8 * 1024 * 1024


@dataclass(frozen=True)
class S3Options:
    endpoint: str = ""
    region: str = ""
    path_style: bool = False
    retries: int = 5
    timeout: float = 20.0


def options_from_config(cfg) -> S3Options:
    return S3Options(cfg.s3_endpoint, cfg.s3_region, cfg.s3_path_style, cfg.s3_retries, cfg.s3_timeout)


def parse_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ValueError(uri)
    bucket, _, key = uri[len("s3://"):].partition("/")
    return bucket, key.strip("/")


def make_client(options: S3Options | None = None, *, attempts: int | None = None, timeout: float | None = None):
    import boto3
    from botocore.config import Config

    options = options or S3Options()
    config = Config(
        retries={"max_attempts": attempts or options.retries, "mode": "standard"},
        connect_timeout=timeout or options.timeout, read_timeout=timeout or options.timeout,
        s3={"addressing_style": "path" if options.path_style else "auto"},
        request_checksum_calculation="when_required", response_checksum_validation="when_required",
    )
    region = options.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    try:
        return boto3.session.Session().client("s3", endpoint_url=options.endpoint or None, region_name=region,
                                              config=config)
    except ValueError as exc:  # malformed endpoint URL
        raise StorageError(f"invalid S3 endpoint {options.endpoint!r} ({exc}); pass a URL like "
                           "https://s3.example.com or http://127.0.0.1:9000 to --s3-endpoint") from None


def _endpoint(client) -> str:
    return client.meta.endpoint_url


def explain(exc: Exception, client, bucket: str, action: str) -> str:
    """One line: what failed, where, and what to do."""
    from botocore.exceptions import (ClientError, EndpointConnectionError, NoCredentialsError,
                                     ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError)

    where = f"bucket {bucket!r} at {_endpoint(client)}"
    if isinstance(exc, NoCredentialsError):
        return (f"cannot {action} {where}: no AWS credentials found; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                "AWS_PROFILE, or give the job a role")
    if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError, ConnectionClosedError)):
        return (f"cannot {action} {where}: endpoint unreachable ({type(exc).__name__}); check --s3-endpoint / "
                "AWS_ENDPOINT_URL and the network")
    if isinstance(exc, ReadTimeoutError):
        return f"cannot {action} {where}: the endpoint timed out; retry, or raise --s3-timeout"
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("NoSuchBucket", "404", "NotFound") or status == 404:
            return f"cannot {action} {where}: the bucket does not exist; create it or fix the s3:// URI"
        if code in ("AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch") or status == 403:
            return (f"cannot {action} {where}: access denied ({code}); check the credentials and the bucket "
                    "policy (s3:PutObject, s3:GetObject, s3:DeleteObject, s3:ListBucket)")
        return f"cannot {action} {where}: {code or status} ({exc})"
    return f"cannot {action} {where}: {type(exc).__name__}: {exc}"


def _s3_errors():
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import BotoCoreError, ClientError
    return (BotoCoreError, ClientError, S3UploadFailedError)


# ----------------------------------------------------------------------------- artifact store

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
        except _s3_errors() as exc:
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
            chunk = keys[i:i + 1000]
            if chunk:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in chunk],
                                                                       "Quiet": True})

    def upload(self, path: Path, key: str) -> None:
        from boto3.s3.transfer import TransferConfig

        ctype = CONTENT_TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        self.client.upload_file(str(path), self.bucket, key,
                                ExtraArgs={"ContentType": ctype, "Metadata": {"sha256": sha256_file(path)}},
                                Config=TransferConfig(multipart_threshold=MULTIPART_THRESHOLD,
                                                      multipart_chunksize=MULTIPART_THRESHOLD, use_threads=True))

    def publish(self, run_dir: Path, run_id: str, summary: dict) -> str:
        """Objects, then manifest.json (the completion marker), then latest.json. All or nothing."""
        from job.manifest import MANIFEST, run_files
        from job.store import LATEST, latest_record

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
            self.upload(run_dir / MANIFEST, manifest_key)
            written.append(manifest_key)
            body = json.dumps(latest_record(run_id, run_uri, summary), indent=2).encode()
            self.client.put_object(Bucket=self.bucket, Key=self._key(LATEST), Body=body,
                                   ContentType="application/json")
        except _s3_errors() + (OSError,) as exc:
            message = explain(exc, self.client, self.bucket, f"publish run {run_id} to")
            self._cleanup(written)
            raise StorageError(f"{message}; no manifest was written and latest.json is unchanged") from None
        seconds = time.perf_counter() - started
        summary["upload"] = {"bytes": total_bytes, "objects": len(written) + 1, "seconds": round(seconds, 3),
                             "mb_per_s": round(total_bytes / 1e6 / max(seconds, 1e-9), 2),
                             "requests": self.requests - requests0}
        log.info("published %d objects (%.1f MB) to %s in %.2fs, %d requests", len(written), total_bytes / 1e6,
                 run_uri, seconds, self.requests - requests0)
        return run_uri

    def _cleanup(self, keys: list[str]) -> None:
        try:
            # the manifest first, so that a partially removed run never looks complete
            self._delete(sorted(keys, key=lambda k: not k.endswith("/manifest.json")))
        except _s3_errors() as exc:
            log.warning("clean-up of %d partial objects failed (%s); they are incomplete (no manifest)",
                        len(keys), type(exc).__name__)


# ----------------------------------------------------------------------------- data source

def download_source(uri: str, cache_dir: Path, options: S3Options | None = None) -> Path:
    """s3://bucket/key (one archive) or s3://bucket/prefix (an image-folder tree) -> a local path in the cache."""
    bucket, key = parse_uri(uri)
    client = make_client(options)
    dest_root = Path(cache_dir) / "s3" / bucket
    marker_root = Path(cache_dir) / "s3-etags" / bucket  # kept apart: a downloaded tree holds only its files
    try:
        if key:
            try:
                head = client.head_object(Bucket=bucket, Key=key)
                return _download_object(client, bucket, key, head, dest_root / key, marker_root / key)
            except _s3_errors()[1] as exc:
                if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 404:
                    raise
        prefix = key + "/" if key else ""
        objects = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            objects += page.get("Contents", [])
        if not objects:
            raise DataError(f"--data {uri}: no such object or prefix in bucket {bucket!r} at {_endpoint(client)}")
        for obj in objects:
            rel = obj["Key"][len(prefix):]
            if not rel or rel.endswith("/"):
                continue
            if rel.startswith("/") or ".." in rel.split("/"):
                raise DataError(f"--data {uri}: unsafe object key {obj['Key']!r}; refusing it")
            head = client.head_object(Bucket=bucket, Key=obj["Key"])
            _download_object(client, bucket, obj["Key"], head, dest_root / key / rel, marker_root / obj["Key"])
        return dest_root / key
    except DataError:
        raise
    except _s3_errors() as exc:
        raise DataError("--data: " + explain(exc, client, bucket, f"read {uri} from")) from None


def _download_object(client, bucket: str, key: str, head: dict, dest: Path, marker: Path) -> Path:
    """Download unless the cached copy has the same ETag and size; verify before it replaces anything."""
    etag, size = head.get("ETag", "").strip('"'), head["ContentLength"]
    marker = marker.with_name(marker.name + ".etag")
    if dest.is_file() and marker.is_file() and marker.read_text() == etag and dest.stat().st_size == size:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    os.close(fd)
    try:
        client.download_file(bucket, key, tmp)
        _verify_download(Path(tmp), head, f"s3://{bucket}/{key}")
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(etag)
    return dest


def _verify_download(path: Path, head: dict, uri: str) -> None:
    if path.stat().st_size != head["ContentLength"]:
        raise DataError(f"{uri}: downloaded {path.stat().st_size} bytes, expected {head['ContentLength']}")
    expected_sha = head.get("Metadata", {}).get("sha256")
    if expected_sha:
        if sha256_file(path) != expected_sha:
            raise DataError(f"{uri}: sha256 of the download does not match the object's sha256 metadata")
        return
    etag = head.get("ETag", "").strip('"')
    if etag and "-" not in etag and len(etag) == 32:  # single-part upload: the ETag is the MD5
        md5 = hashlib.md5(usedforsecurity=False)
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                md5.update(block)
        if md5.hexdigest() != etag:
            raise DataError(f"{uri}: MD5 of the download does not match the object's ETag")


# ----------------------------------------------------------------------------- checkpoint blobs

class S3Blobs:
    def __init__(self, uri: str, options: S3Options | None = None):
        self.bucket, self.prefix = parse_uri(uri)
        self.client = make_client(options)

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def _wrap(self, exc, action):
        from job.errors import CheckpointError
        return CheckpointError("checkpoint: " + explain(exc, self.client, self.bucket, action))

    def put_file(self, name: str, src: Path) -> None:
        try:
            self.client.upload_file(str(src), self.bucket, self._key(name))
        except _s3_errors() as exc:
            raise self._wrap(exc, "write to") from None

    def put_bytes(self, name: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(name), Body=data)
        except _s3_errors() as exc:
            raise self._wrap(exc, "write to") from None

    def get_bytes(self, name: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(name))["Body"].read()
        except _s3_errors()[1] as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise self._wrap(exc, "read from") from None
        except _s3_errors() as exc:
            raise self._wrap(exc, "read from") from None

    def get_file(self, name: str, dest: Path) -> bool:
        if not name:
            return False
        try:
            self.client.download_file(self.bucket, self._key(name), str(dest))
            return True
        except _s3_errors()[1] as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return False
            raise self._wrap(exc, "read from") from None

    def delete(self, name: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(name))
        except _s3_errors():
            log.warning("could not delete old checkpoint file %s", name)

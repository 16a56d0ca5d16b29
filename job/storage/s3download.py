"""A data source in S3, downloaded into the cache: one archive, or every object under a prefix (a tree).
Each download is verified (sha256 metadata, else the single-part ETag's MD5) before it replaces anything."""

import hashlib
from pathlib import Path

from job.errors import DataError
from job.storage.files import atomic_path, atomic_write_bytes, sha256_file
from job.storage.s3client import S3Options, endpoint_of, explain, make_client, parse_uri, s3_errors


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
            except s3_errors()[1] as exc:
                if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 404:
                    raise
        prefix = key + "/" if key else ""
        objects = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            objects += page.get("Contents", [])
        if not objects:
            raise DataError(f"--data {uri}: no such object or prefix in bucket {bucket!r} at {endpoint_of(client)}")
        for obj in objects:
            rel = obj["Key"][len(prefix) :]
            if not rel or rel.endswith("/"):
                continue
            if rel.startswith("/") or ".." in rel.split("/"):
                raise DataError(f"--data {uri}: unsafe object key {obj['Key']!r}; refusing it")
            head = client.head_object(Bucket=bucket, Key=obj["Key"])
            _download_object(client, bucket, obj["Key"], head, dest_root / key / rel, marker_root / obj["Key"])
        return dest_root / key
    except DataError:
        raise
    except s3_errors() as exc:
        raise DataError("--data: " + explain(exc, client, bucket, f"read {uri} from")) from None


def _download_object(client, bucket: str, key: str, head: dict, dest: Path, marker: Path) -> Path:
    """Download unless the cached copy has the same ETag and size; verify before it replaces anything."""
    etag, size = head.get("ETag", "").strip('"'), head["ContentLength"]
    marker = marker.with_name(marker.name + ".etag")
    if dest.is_file() and marker.is_file() and marker.read_text() == etag and dest.stat().st_size == size:
        return dest
    with atomic_path(dest) as tmp:
        client.download_file(bucket, key, str(tmp))
        _verify_download(tmp, head, f"s3://{bucket}/{key}")
    atomic_write_bytes(marker, etag.encode())
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

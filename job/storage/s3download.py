"""A data source in S3, downloaded into the cache: one archive, or every object under a prefix (a tree).
Each download is verified before it replaces anything: against the object's sha256 metadata where it has one,
else the single-part ETag's MD5 (an S3 data source was uploaded by someone else: its keys are confined)."""

import hashlib
from pathlib import Path

from job.errors import DataError, StorageError
from job.storage.files import atomic_path, atomic_write_bytes, sha256_file
from job.storage.s3 import S3Location
from job.storage.s3client import S3Options, parse_uri

MAX_OBJECT_BYTES = 64 * 1024**3


def download_source(uri: str, cache_dir: Path, options: S3Options | None = None) -> Path:
    """s3://bucket/key (one archive) or s3://bucket/prefix (an image-folder tree) -> a local path in the cache."""
    try:
        bucket, key = parse_uri(uri)
        bucket_root = S3Location(f"s3://{bucket}", options, "--data")
        dest_root = Path(cache_dir) / "s3" / bucket_root.bucket
        marker_root = Path(cache_dir) / "s3-etags" / bucket_root.bucket  # apart: a tree holds only its files
        if key:
            head = bucket_root.head(key)
            if head is not None:
                return _download_object(bucket_root, key, head, dest_root / key, marker_root / key)
        objects = {n: s for n, s in bucket_root.listing(key).items() if not n.endswith("/")}
        if not objects:
            raise DataError(f"--data {uri}: no such object or prefix in bucket {bucket_root.bucket!r}")
        for name, size in objects.items():
            if size < 0:
                raise DataError(f"--data {uri}: unsafe object key under the prefix ({name}); refusing it")
            head = bucket_root.head(name)
            if head is not None:
                _download_object(bucket_root, name, head, dest_root / name, marker_root / name)
        return dest_root / key
    except StorageError as exc:
        raise DataError(str(exc)) from None


def _download_object(location: S3Location, name: str, head: dict, dest: Path, marker: Path) -> Path:
    """Download unless the cached copy has the same ETag and size; verify before it replaces anything."""
    etag, size = head.get("ETag", "").strip('"'), head["ContentLength"]
    marker = marker.with_name(marker.name + ".etag")
    if dest.is_file() and marker.is_file() and marker.read_text() == etag and dest.stat().st_size == size:
        return dest
    with atomic_path(dest) as tmp:
        tmp.unlink()
        location.copy_out(name, tmp, MAX_OBJECT_BYTES)
        _verify_download(tmp, head, location.describe(name))
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

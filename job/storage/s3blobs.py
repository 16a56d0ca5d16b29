"""S3Blobs: a flat set of named objects under s3://bucket/prefix (checkpoints)."""

import logging
from pathlib import Path

from job.errors import StorageError
from job.storage.s3client import S3Options, explain, make_client, parse_uri, s3_errors

log = logging.getLogger(__name__)


class S3Blobs:
    def __init__(self, uri: str, options: S3Options | None = None):
        self.bucket, self.prefix = parse_uri(uri)
        self.client = make_client(options)

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def _wrap(self, exc, action):
        """I/O failures are storage errors (exit 4, retryable); what a checkpoint holds is job.train.checkpoint's."""
        return StorageError("checkpoint location: " + explain(exc, self.client, self.bucket, action))

    def probe(self) -> None:
        """Writable, before any training: write and delete a small object."""
        self.put_bytes(".probe", b"probe")
        self.delete(".probe")

    def put_file(self, name: str, src: Path) -> None:
        try:
            self.client.upload_file(str(src), self.bucket, self._key(name))
        except s3_errors() as exc:
            raise self._wrap(exc, "write to") from None

    def put_bytes(self, name: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(name), Body=data)
        except s3_errors() as exc:
            raise self._wrap(exc, "write to") from None

    def get_bytes(self, name: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(name))["Body"].read()
        except s3_errors()[1] as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise self._wrap(exc, "read from") from None
        except s3_errors() as exc:
            raise self._wrap(exc, "read from") from None

    def get_file(self, name: str, dest: Path) -> bool:
        if not name:
            return False
        try:
            self.client.download_file(self.bucket, self._key(name), str(dest))
            return True
        except s3_errors()[1] as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return False
            raise self._wrap(exc, "read from") from None

    def delete(self, name: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(name))
        except s3_errors():
            log.warning("could not delete old checkpoint file %s", name)

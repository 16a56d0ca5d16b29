"""A flat named-blob location: a local folder or an s3:// prefix. Used for checkpoints."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


class LocalBlobs:
    def __init__(self, root: str):
        self.root = Path(root)

    def put_file(self, name: str, src: Path) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{name}.")
        os.close(fd)
        shutil.copyfile(src, tmp)
        os.replace(tmp, self.root / name)

    def put_bytes(self, name: str, data: bytes) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{name}.")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.root / name)

    def get_bytes(self, name: str) -> bytes | None:
        try:
            return (self.root / name).read_bytes()
        except FileNotFoundError:
            return None

    def get_file(self, name: str, dest: Path) -> bool:
        if not name or not (self.root / name).is_file():
            return False
        shutil.copyfile(self.root / name, dest)
        return True

    def delete(self, name: str) -> None:
        (self.root / name).unlink(missing_ok=True)


def open_location(uri: str, s3_options=None):
    if uri.startswith("s3://"):
        from job.s3 import S3Blobs
        return S3Blobs(uri, s3_options)
    return LocalBlobs(uri)

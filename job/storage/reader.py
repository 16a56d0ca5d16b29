"""Reading a store back: which runs it holds and their files, for the run catalog (`job runs`) and the
predictor. A local folder or s3://bucket/prefix, the same interface."""

import json
import shutil
from pathlib import Path

from job.errors import DataError, StorageError
from job.storage.manifest import MANIFEST
from job.storage.pointer import LATEST


class LocalReader:
    def __init__(self, root: str):
        self.root = Path(root).expanduser()
        self.uri = str(self.root)
        if not self.root.is_dir():
            raise StorageError(f"store {self.root} is not a folder")

    def runs(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def read(self, run: str | None, name: str) -> bytes | None:
        path = self.root / run / name if run else self.root / name
        try:
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def files(self, run: str) -> dict[str, dict]:
        """relative path -> {"bytes", "sha256" (None: compute from the content)}"""
        base = self.root / run
        return {
            p.relative_to(base).as_posix(): {"bytes": p.stat().st_size, "sha256": None}
            for p in sorted(base.rglob("*"))
            if p.is_file()
        }

    def download(self, run: str, name: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.root / run / name, dest)

    def location(self, run: str) -> str:
        return str(self.root / run)


class S3Reader:
    def __init__(self, uri: str, options=None):
        from job.storage.s3client import make_client, parse_uri

        self.bucket, self.prefix = parse_uri(uri)
        self.uri = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.client = make_client(options)

    def _key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def _call(self, fn, action: str, **kwargs):
        from job.storage.s3client import explain, s3_errors

        try:
            return fn(Bucket=self.bucket, **kwargs)
        except s3_errors() as exc:
            raise StorageError(explain(exc, self.client, self.bucket, action)) from None

    def runs(self) -> list[str]:
        prefix = self._key() + "/" if self.prefix else ""
        pages = self._call(
            lambda **kw: list(self.client.get_paginator("list_objects_v2").paginate(**kw)),
            "list",
            Prefix=prefix,
            Delimiter="/",
        )
        return sorted(p["Prefix"][len(prefix) :].rstrip("/") for page in pages for p in page.get("CommonPrefixes", []))

    def read(self, run: str | None, name: str) -> bytes | None:
        from botocore.exceptions import ClientError

        key = self._key(run, name) if run else self._key(name)
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            from job.storage.s3client import explain

            raise StorageError(explain(exc, self.client, self.bucket, f"read {key} from")) from None

    def files(self, run: str) -> dict[str, dict]:
        prefix = self._key(run) + "/"
        pages = self._call(
            lambda **kw: list(self.client.get_paginator("list_objects_v2").paginate(**kw)), "list", Prefix=prefix
        )
        out = {}
        for obj in (o for page in pages for o in page.get("Contents", [])):
            head = self._call(self.client.head_object, "read", Key=obj["Key"])
            out[obj["Key"][len(prefix) :]] = {"bytes": obj["Size"], "sha256": head.get("Metadata", {}).get("sha256")}
        return out

    def download(self, run: str, name: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        self._call(
            lambda **kw: self.client.download_file(kw["Bucket"], kw["Key"], str(dest)),
            "download",
            Key=self._key(run, name),
        )

    def location(self, run: str) -> str:
        return f"s3://{self.bucket}/{self._key(run)}"


def open_reader(uri: str, s3_options=None):
    return S3Reader(uri, s3_options) if uri.startswith("s3://") else LocalReader(uri)


def read_json(reader, run: str | None, name: str):
    raw = reader.read(run, name)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise DataError(f"{reader.uri}/{run + '/' if run else ''}{name} is not valid JSON") from None


def latest_run(reader) -> str | None:
    pointer = read_json(reader, None, LATEST)
    return pointer.get("run_id") if isinstance(pointer, dict) else None


__all__ = ["MANIFEST", "LocalReader", "S3Reader", "latest_run", "open_reader", "read_json"]

"""storage: locations (a local folder, an S3 prefix) with one small interface, and the runs layout on top.
Every name read from a store passes job.runtime.names.confine before it becomes a path or a key.

    layout.py    every file name of a run folder and a store, the one metrics.json reader, json_number
    local.py     LocalLocation: never follows a link, reads regular files only, bounded, atomic writes
    s3.py        S3Location: one key function, one 404 test, one pagination (s3body.py: bodies, Content-MD5;
                 s3publish.py: a run folder and the pointer, all or nothing)
    runs.py      RunStore: publish, latest.json, verify (hashing content), download, fetch a verified file
    manifest.py  manifest.json: written last, parsed with every path confined, the one verifier
    pointer.py   latest.json's record and ordering;  files.py  atomic writes, sha256, full-disk check
    s3client.py  the boto3 client and one-line error explanations;  s3download.py  S3 data sources
    signing/     model.sig: sign a run folder (--sign-key), require a trusted signature (--public-key) on read

Imports no training code (enforced by the import-linter contracts in pyproject.toml).
"""

from job.storage.local import LocalLocation
from job.storage.runs import RunStore


def open_location(uri: str, s3_options=None, what: str = "store", hint: str = "choose a writable --out folder"):
    """A local folder or an s3://bucket/prefix, behind the same interface."""
    if uri.startswith("s3://"):
        from job.storage.s3 import S3Location

        return S3Location(uri, s3_options, what)
    return LocalLocation(uri, f"local {what}", hint)


def open_store(out: str, s3_options=None, layout: str = "runs") -> RunStore:
    """The artifact store for `--out`: a local folder, s3://bucket/prefix, or a platform's model directory."""
    return RunStore(open_location(out, s3_options), layout)


def open_blobs(uri: str, s3_options=None):
    """A flat named-file location (checkpoints): a local folder or an s3:// prefix."""
    return open_location(uri, s3_options, "checkpoint location", "choose a writable --checkpoint-dir")

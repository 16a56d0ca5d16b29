"""What a data source holds, from its headers alone (tar member headers, folder listings, S3 HEAD requests):
for `--dry-run`. Nothing is decoded and nothing is downloaded; unsafe entries are refused as in a real run."""

from collections import Counter
from pathlib import Path, PurePosixPath

from job.data.entries import iter_folder, safe_member_name
from job.data.sources import IMAGE_EXTENSIONS, LAYOUT_HINT, resolve_auto
from job.errors import DataError
from job.gates.class_names import check_class_names


def describe(spec: str, s3_options=None) -> dict:
    spec = resolve_auto(spec)
    if spec == "keras":
        return {"source": "keras", "note": "keras.datasets downloads CIFAR-10 at run time (needs the network)"}
    if spec.startswith("s3://"):
        return _describe_s3(spec, s3_options)
    path = Path(spec)
    if not path.exists():
        raise DataError(f"data source {spec!r} does not exist; {LAYOUT_HINT}")
    names = [n for n, _ in iter_folder(path)] if path.is_dir() else _tar_names(path)
    if any(PurePosixPath(n).name == "data_batch_1" for n in names):
        return {
            "source": str(path),
            "format": "cifar-10-python",
            "batches": sorted(PurePosixPath(n).name for n in names if "_batch" in n),
        }
    counts: Counter = Counter()
    for name in names:
        parts = name.rstrip("/").split("/")
        if (
            len(parts) >= 3
            and parts[-3] in ("train", "test")
            and PurePosixPath(parts[-1]).suffix.lower() in IMAGE_EXTENSIONS
        ):
            counts[(parts[-3], parts[-2])] += 1
    if not counts:
        raise DataError(f"{path}: no images under train/<class>/; {LAYOUT_HINT}")
    splits = {
        split: dict(sorted((cls, n) for (s, cls), n in counts.items() if s == split)) for split in ("train", "test")
    }
    if splits["train"]:  # the class-name gate, as a real run applies it
        check_class_names(sorted(splits["train"]), f"{path}: train/ class folders")
    return {
        "source": str(path),
        "format": "image folder",
        "bytes": path.stat().st_size if path.is_file() else None,
        "images": {split: sum(c.values()) for split, c in splits.items()},
        "classes": sorted(splits["train"]),
        "images_per_class": splits["train"],
    }


def _tar_names(path: Path) -> list[str]:
    import tarfile

    try:
        with tarfile.open(path, "r:*") as tar:
            return [safe_member_name(path, m) + ("/" if m.isdir() else "") for m in tar]
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"{path}: unreadable archive ({exc}); re-download or re-create it") from None


def _describe_s3(uri: str, s3_options) -> dict:
    from job.storage.s3client import explain, make_client, parse_uri, s3_errors

    bucket, key = parse_uri(uri)
    client = make_client(s3_options)
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
        objects = [o for page in pages for o in page.get("Contents", [])]
    except s3_errors() as exc:
        raise DataError("--data: " + explain(exc, client, bucket, f"list {uri} in")) from None
    if not objects:
        raise DataError(f"--data {uri}: no such object or prefix")
    return {"source": uri, "objects": len(objects), "bytes": sum(o["Size"] for o in objects)}

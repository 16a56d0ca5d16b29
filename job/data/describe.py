"""What a data source holds, from its headers alone (tar member headers, folder listings, S3 HEAD requests):
for `--dry-run`. Nothing is decoded and nothing is downloaded; the source is read through the run's own reader
(job.data.entries, its limits) and checked by the run's own layout rules (job.data.tree), so the dry run refuses
exactly what the run refuses before decoding."""

from pathlib import PurePosixPath

from job.data.entries import iter_folder, iter_tar
from job.data.sources import local_source, resolve_auto
from job.data.tree import check_cifar_python, image_tree, is_cifar_python
from job.errors import DataError


def describe(spec: str, s3_options=None) -> dict:
    spec = resolve_auto(spec)
    if spec == "keras":
        return {"source": "keras", "note": "keras.datasets downloads CIFAR-10 at run time (needs the network)"}
    if spec.startswith("s3://"):
        return _describe_s3(spec, s3_options)
    path = local_source(spec)
    names = [n for n, _ in (iter_folder(path) if path.is_dir() else iter_tar(path, read=False))]
    if is_cifar_python(names):
        check_cifar_python(path, names)
        return {
            "source": str(path),
            "format": "cifar-10-python",
            "batches": sorted(PurePosixPath(n).name for n in names if "_batch" in n),
        }
    class_names, splits = image_tree(path, names)
    return {
        "source": str(path),
        "format": "image folder",
        "bytes": path.stat().st_size if path.is_file() else None,
        "images": {split: sum(len(v) for v in classes.values()) for split, classes in splits.items()},
        "classes": class_names,
        "images_per_class": {cls: len(splits["train"][cls]) for cls in class_names},
    }


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

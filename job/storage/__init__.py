"""storage: where runs are published (a local folder or S3), checkpoint locations, manifests.

Imports no training code (enforced by the import-linter contracts in pyproject.toml).
"""

from job.storage.local import LocalBlobs, LocalStore


def open_store(out: str, s3_options=None, layout: str = "runs"):
    """The artifact store for `--out`: a local folder, s3://bucket/prefix, or a platform's model directory."""
    if out.startswith("s3://"):
        from job.storage.s3store import S3Store

        return S3Store(out, s3_options)
    if layout != "runs":
        from job.storage.flat import FlatStore

        return FlatStore(out)
    return LocalStore(out)


def open_blobs(uri: str, s3_options=None):
    """A flat named-blob location (checkpoints): a local folder or an s3:// prefix."""
    if uri.startswith("s3://"):
        from job.storage.s3blobs import S3Blobs

        return S3Blobs(uri, s3_options)
    return LocalBlobs(uri)


def s3_options_from(cfg):
    """S3 settings of a Config, or None when nothing in it is on S3 (boto3 then never loads)."""
    if not any(v.startswith("s3://") for v in (cfg.data, cfg.out, cfg.checkpoint_dir)):
        return None
    from job.storage.s3client import S3Options

    return S3Options(cfg.s3_endpoint, cfg.s3_region, cfg.s3_path_style, cfg.s3_retries, cfg.s3_timeout)

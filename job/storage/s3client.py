"""The S3 client every S3 path shares (AWS S3, Ceph RGW, MinIO, ...), and one-line explanations of its errors.

Credentials come only from boto3's default chain (environment, shared profile, instance / IRSA roles)
and are never logged or written anywhere. The endpoint comes from --s3-endpoint or boto3's own
AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL. Flexible checksums are sent only when required: several
S3-compatible servers reject the CRC headers that boto3 >= 1.36 sends by default. Uploads carry Content-MD5
instead (job.storage.s3.S3Location.put_file), which every S3-compatible server verifies.
"""

import os
import threading

from job.config.parts import S3Options  # the publish piece's S3 settings (cfg.publishing.s3)
from job.errors import StorageError
from job.gates.text import shown

CONTENT_TYPES = {
    ".json": "application/json",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
    ".csv": "text/csv; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
    ".onnx": "application/octet-stream",
    ".keras": "application/zip",
    ".pb": "application/octet-stream",
}
MULTIPART_THRESHOLD = 8 * 1024 * 1024


def parse_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ValueError(uri)
    bucket, _, key = uri[len("s3://") :].partition("/")
    return bucket, key.strip("/")


def make_client(options: S3Options | None = None, *, attempts: int | None = None, timeout: float | None = None):
    from botocore.config import Config

    options = options or S3Options()
    config = Config(
        retries={"max_attempts": attempts or options.retries, "mode": "standard"},
        connect_timeout=timeout or options.timeout,
        read_timeout=timeout or options.timeout,
        s3={"addressing_style": "path" if options.path_style else "auto"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    region = options.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    try:
        return _session().client("s3", endpoint_url=options.endpoint or None, region_name=region, config=config)
    except ValueError as exc:  # malformed endpoint URL
        raise StorageError(
            f"invalid S3 endpoint {options.endpoint!r} ({exc}); pass a URL like "
            "https://s3.example.com or http://127.0.0.1:9000 to --s3-endpoint"
        ) from None


# botocore parses its S3 service model (megabytes of JSON) for every new session: 90-120 ms of each client,
# and a run, `job predict s3://...` or `runs verify` makes several (the store, its probe, the checkpoints). The
# parsed models are shared by every session of this process through one data loader; each client still gets its
# own session, so credentials and region are read from the environment and profile when it is made.
# Measured on 2 cores (Intel Xeon, AMX): 94-116 ms per client without, 14-25 ms with.
_LOADER_LOCK = threading.Lock()
_LOADER = None


def _session():
    import boto3
    import botocore.session

    global _LOADER
    with _LOADER_LOCK:
        core = botocore.session.Session()
        if _LOADER is None:
            _LOADER = core.get_component("data_loader")
        else:
            core.register_component("data_loader", _LOADER)
        session = boto3.session.Session(botocore_session=core)
        # boto3 appends its own data folder to the loader's search path once per session: keep each path once
        _LOADER.search_paths[:] = list(dict.fromkeys(_LOADER.search_paths))
        return session


def endpoint_of(client) -> str:
    return client.meta.endpoint_url


def explain(exc: Exception, client, bucket: str, action: str) -> str:
    """One line: what failed, where, and what to do."""
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        ProxyConnectionError,
        ReadTimeoutError,
    )

    where = f"bucket {bucket!r} at {endpoint_of(client)}"
    if isinstance(exc, NoCredentialsError):
        return (
            f"cannot {action} {where}: no AWS credentials found; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "AWS_PROFILE, or give the job a role"
        )
    if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError, ConnectionClosedError, ProxyConnectionError)):
        return (
            f"cannot {action} {where}: endpoint unreachable ({type(exc).__name__}); check --s3-endpoint / "
            "AWS_ENDPOINT_URL and the network"
        )
    if isinstance(exc, ReadTimeoutError):
        return f"cannot {action} {where}: the endpoint timed out; retry, or raise --s3-timeout"
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "NoSuchBucket":
            return f"cannot {action} {where}: the bucket does not exist; create it or fix the s3:// URI"
        if code in ("NoSuchKey", "404", "NotFound") or status == 404:
            return (
                f"cannot {action} {where}: the object does not exist (removed, or being re-published); "
                "list the store and try again"
            )
        if code in ("AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch") or status == 403:
            return (
                f"cannot {action} {where}: access denied ({code}); check the credentials and the bucket "
                "policy (s3:PutObject, s3:GetObject, s3:DeleteObject, s3:ListBucket)"
            )
        if code in ("BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch", "BadChecksum"):
            return (
                f"cannot {action} {where}: the store refused the bytes it received ({code}: they changed on the "
                "way); check the network or proxy to the endpoint, then try again"
            )
        return f"cannot {action} {where}: {shown(code or status)} ({shown(str(exc))})"
    return f"cannot {action} {where}: {type(exc).__name__}: {shown(str(exc))}"


def s3_errors():
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError, S3UploadFailedError)

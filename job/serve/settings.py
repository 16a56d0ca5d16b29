"""What `job serve` is told: its flags, and on Vertex AI the AIP_* variables the platform sets (the port, the
health and predict routes, the model's storage URI). Every value is checked here, before anything loads."""

import os
import re
from dataclasses import dataclass

from job.errors import ConfigError
from job.gates.text import shown

# Cloud Storage FUSE mounts gs://BUCKET/PATH at /gcs/BUCKET/PATH inside Vertex AI containers.
GCS_MOUNT = os.environ.get("JOB_SERVE_GCS_MOUNT", "/gcs")
SAGEMAKER_MODEL_DIR = "/opt/ml/model"  # where SageMaker puts ModelDataUrl / ModelDataSource
_ROUTE = re.compile(r"^/[A-Za-z0-9._~/:@!$&'()*+,;=-]{0,200}$")


@dataclass(frozen=True)
class Settings:
    model: str
    host: str
    port: int
    model_name: str
    health_route: str | None  # Vertex AI's AIP_HEALTH_ROUTE, served besides the fixed routes
    predict_route: str | None  # Vertex AI's AIP_PREDICT_ROUTE
    max_body_bytes: int
    max_batch: int
    max_wait_ms: float
    max_queue: int
    threads: int
    warmup: int
    grace_s: float
    drain_delay_s: float
    trust: object  # job.storage.signing.Trust, or None: then unsigned runs are served as `job predict` reads them
    int8: bool


def add_arguments(p) -> None:
    p.add_argument(
        "model",
        nargs="?",
        help="model.onnx, a run folder or a store root (follows latest.json); local or s3://. "
        "Default: AIP_STORAGE_URI (Vertex AI; gs:// is read from its Cloud Storage FUSE mount), else "
        "/opt/ml/model (SageMaker)",
    )
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--port", type=int, default=None, help="port (default AIP_HTTP_PORT, else 8080)")
    p.add_argument("--model-name", default="cifar10", help="the model's name in the v2 routes (default cifar10)")
    p.add_argument("--max-body-bytes", type=int, default=4 * 1024 * 1024, help="larger bodies get 413 (4 MiB)")
    p.add_argument("--max-batch", type=int, default=64, help="images per inference batch; larger requests get 413")
    p.add_argument(
        "--max-wait-ms",
        type=float,
        default=5.0,
        help="how long a batch may wait for requests being read to fill it (default 5 ms; a lone request never waits)",
    )
    p.add_argument("--max-queue", type=int, default=256, help="images waiting for inference; beyond it 429")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = CPUs available)")
    p.add_argument("--warmup", type=int, default=3, help="warm-up inferences at the largest batch before ready")
    p.add_argument("--grace-s", type=float, default=25.0, help="SIGTERM: seconds to drain in-flight requests")
    p.add_argument(
        "--drain-delay-s",
        type=float,
        default=0.0,
        help="SIGTERM: seconds to keep accepting (not ready) before the listener closes, while load balancers "
        "remove the pod (Kubernetes: a few seconds; default 0)",
    )
    p.add_argument("--int8", action="store_true", help="serve the run's INT8 model (as `job predict --int8`)")
    from job.storage.signing import add_trust_arguments

    add_trust_arguments(p)  # --public-key / --trust-certificate: the model.sig check of `job predict`


def _route(name: str, value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if not _ROUTE.match(value):
        raise ConfigError(f"{name} {shown(value)!s} is not a URL path like /health")
    return value


def model_from_storage_uri(uri: str) -> str:
    """AIP_STORAGE_URI -> what the verified loader opens: gs:// through its FUSE mount, s3:// and paths as is."""
    if uri.startswith("gs://"):
        return f"{GCS_MOUNT.rstrip('/')}/{uri[len('gs://') :].strip('/')}"
    return uri


def _trust(args):
    from job.storage.signing import load_trust

    return load_trust(getattr(args, "public_key", ""), getattr(args, "trust_certificate", ""))


def default_model(env, sagemaker_model_dir: str = SAGEMAKER_MODEL_DIR) -> str | None:
    """Without a MODEL argument: Vertex AI's AIP_STORAGE_URI, else SageMaker's model folder when it exists."""
    if env.get("AIP_STORAGE_URI"):
        return model_from_storage_uri(env["AIP_STORAGE_URI"])
    return sagemaker_model_dir if os.path.isdir(sagemaker_model_dir) else None


def resolve(args, env=os.environ) -> Settings:
    model = args.model or default_model(env)
    if not model:
        raise ConfigError(
            "give the model to serve (a model.onnx, a run folder or a store), or set AIP_STORAGE_URI "
            f"(Vertex AI), or mount it at {SAGEMAKER_MODEL_DIR} (SageMaker)"
        )
    port = args.port
    if port is None:
        raw = env.get("AIP_HTTP_PORT", "8080")
        if not re.fullmatch(r"[0-9]{1,5}", raw):  # ASCII digits: str.isdigit() also accepts '¹', which int() refuses
            raise ConfigError(f"AIP_HTTP_PORT {shown(raw)} is not a port number")
        port = int(raw)
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port}: not a port number")
    checks = {
        "--max-body-bytes": (args.max_body_bytes, 1024, 1024**3),
        "--max-batch": (args.max_batch, 1, 4096),
        "--max-queue": (args.max_queue, 1, 1_000_000),
        "--threads": (args.threads, 0, 1024),
        "--warmup": (args.warmup, 0, 100_000),
    }
    for flag, (value, low, high) in checks.items():
        if not low <= value <= high:
            raise ConfigError(f"{flag} {value}: must be between {low} and {high}")
    if args.max_queue < args.max_batch:
        raise ConfigError(f"--max-queue {args.max_queue} must be at least --max-batch {args.max_batch}")
    if not 0 <= args.max_wait_ms <= 1000 or not 0 < args.grace_s <= 3600 or not 0 <= args.drain_delay_s <= 600:
        raise ConfigError("--max-wait-ms must be 0..1000, --grace-s 0..3600 and --drain-delay-s 0..600")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", args.model_name):
        raise ConfigError(f"--model-name {shown(args.model_name)}: letters, digits, '.', '_', '-' only")
    return Settings(
        model=model,
        host=args.host,
        port=port,
        model_name=args.model_name,
        health_route=_route("AIP_HEALTH_ROUTE", env.get("AIP_HEALTH_ROUTE")),
        predict_route=_route("AIP_PREDICT_ROUTE", env.get("AIP_PREDICT_ROUTE")),
        max_body_bytes=args.max_body_bytes,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        threads=args.threads,
        warmup=args.warmup,
        grace_s=args.grace_s,
        drain_delay_s=args.drain_delay_s,
        trust=_trust(args),
        int8=args.int8,
    )

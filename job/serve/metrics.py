"""The Prometheus metrics at GET /metrics (text format 0.0.4), in a registry of the server's own."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self, queued=lambda: 0, ready=lambda: False):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("serve_requests", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.latency = Histogram(
            "serve_request_seconds", "request latency by route", ["route"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.batch = Histogram("serve_batch_images", "images per inference batch", buckets=BATCH_BUCKETS, registry=r)
        self.inference = Histogram(
            "serve_inference_seconds", "ONNX Runtime time per batch", buckets=LATENCY_BUCKETS, registry=r
        )
        Gauge("serve_queue_images", "images waiting for inference", registry=r).set_function(queued)
        Gauge("serve_model_ready", "1 once the model is loaded and warmed up", registry=r).set_function(
            lambda: 1 if ready() else 0
        )

    def request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def batch_done(self, images: int, infer_ms: float) -> None:
        self.batch.observe(images)
        self.inference.observe(infer_ms / 1000)

    def exposition(self) -> tuple[bytes, bytes]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST.encode()

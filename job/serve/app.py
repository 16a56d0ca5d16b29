"""The ASGI application: one port, three protocols, readiness, bounds, request logs and metrics.

    GET  /v2/health/live  /v2/health/ready  /v2  /v2/models/{name}[/versions/{v}][/ready]     (v2)
    POST /v2/models/{name}[/versions/{v}]/infer                                              (v2)
    GET  /ping   POST /invocations                                                          (SageMaker)
    GET  $AIP_HEALTH_ROUTE   POST $AIP_PREDICT_ROUTE                                        (Vertex AI)
    GET  /metrics                                                                           (Prometheus)

Statuses: 200; 400 a malformed request, tensor or image; 404 an unknown route or model; 405 a wrong method;
413 a body over --max-body-bytes or more images than --max-batch; 415 an unsupported Content-Type; 429 the
queue is full; 503 not ready (loading, warming up, or the model failed to load; health routes also while
draining after SIGTERM, when a request that reaches the server is still answered).
The model loads after the port opens, so liveness answers at once and readiness only after the warm-up.
"""

import asyncio
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from job.errors import JobError
from job.gates.text import shown
from job.runtime.events import emit
from job.serve import sagemaker, v2, vertex
from job.serve.batcher import Batcher
from job.serve.http import HTTPError, header, read_body, send, send_error, send_json
from job.serve.images import NotForTheLoop, fits_on_loop, parse_on_loop
from job.serve.metrics import Metrics
from job.serve.predictions import predictions_json

OFF_LOOP_BYTES = 256 * 1024  # v2 tensor bodies larger than this are parsed in the decode pool, off the event loop
# Threads that parse request bodies and decode images: at most this many images are decoded at once, so the
# decoding memory is DECODE_THREADS x the gate's per-image bound (docs/serving.md#memory). Image requests
# (SageMaker, Vertex AI) are always parsed here, never on the event loop.
DECODE_THREADS = 2
# The metrics' route labels for the v2 model routes: a fixed set, whatever the path (unknown ones share one).
V2_ROUTES = {"": "/v2/models/{name}", "ready": "/v2/models/{name}/ready", "infer": "/v2/models/{name}/infer"}
V2_OTHER = "/v2/models/{name}/{other}"


class App:
    def __init__(self, settings, load):
        """`load()` -> a warmed-up job.serve.loading.Model; called in a thread once the server listens."""
        self.settings, self._load = settings, load
        self.model = None
        self.problem: str | None = None  # why the model is not loaded, once that is known
        self.draining = False
        self.in_flight = 0  # requests being answered now
        self.cut = 0  # requests cancelled before their answer (uvicorn's --grace-s ran out): not drained
        self.batcher: Batcher | None = None
        self._decode = ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="decode")
        self.metrics = Metrics(queued=lambda: self.batcher.queued if self.batcher else 0, ready=lambda: self.ready)
        self.fixed = {
            ("GET", "/v2/health/live"): self._live,
            ("GET", "/v2/health/ready"): self._ready,
            ("GET", "/v2"): self._server_metadata,
            ("GET", "/ping"): self._ready,
            ("POST", "/invocations"): self._invocations,
            ("GET", "/metrics"): self._metrics,
        }
        if settings.health_route:
            self.fixed[("GET", settings.health_route)] = self._ready
        if settings.predict_route:
            self.fixed[("POST", settings.predict_route)] = self._vertex_predict
        self._fixed_paths = {path for _, path in self.fixed}

    @property
    def ready(self) -> bool:
        return self.model is not None and not self.draining

    # ------------------------------------------------------------------ lifecycle

    async def _lifespan(self, receive, send_fn) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                s = self.settings
                self.batcher = Batcher(
                    self._infer_batch,
                    max_batch=s.max_batch,
                    max_wait_s=s.max_wait_ms / 1000,
                    max_queue=s.max_queue,
                    on_batch=self._batch_done,
                )
                self.batcher.start()
                self._loading = asyncio.get_running_loop().create_task(self._load_model())
                await send_fn({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.batcher:
                    await self.batcher.stop()
                self._decode.shutdown(wait=False, cancel_futures=True)
                await send_fn({"type": "lifespan.shutdown.complete"})
                return

    async def _load_model(self) -> None:
        try:
            model = await asyncio.to_thread(self._load)
        except JobError as exc:
            self.problem = f"{exc.kind} error: {exc}"
            print(f"error: {shown(self.problem, 2000)}", file=sys.stderr, flush=True)
            emit("model_failed", kind=exc.kind, reason=str(exc), exit_code=exc.exit_code)
            return
        except Exception as exc:  # a bug: never ready, and said so, rather than "loading" forever
            self.problem = f"internal error: {type(exc).__name__}: {exc}"
            print(f"error: {shown(self.problem, 2000)}", file=sys.stderr, flush=True)
            emit("model_failed", kind="internal", reason=str(exc), exit_code=1)
            return
        self.model = model
        emit(
            "serve_ready",
            run_id=model.run_id,
            classes=len(model.class_names),
            load_s=round(model.load_seconds, 3),
            warmup_s=round(model.warmup_seconds, 3),
            port=self.settings.port,
        )

    def drain(self) -> None:
        """SIGTERM: readiness drops at once; accepted requests still get their answers."""
        self.draining = True
        emit("serve_draining", queued=self.batcher.queued if self.batcher else 0)

    @property
    def unanswered(self) -> int:
        """Requests that got no answer of the app's: cancelled at the end of the grace period, or still running."""
        return self.cut + self.in_flight

    def _infer_batch(self, images):
        return self.model.run(images)

    def _batch_done(self, **fields) -> None:
        self.metrics.batch_done(fields["images"], fields["infer_ms"])
        emit("batch", **fields)

    # ------------------------------------------------------------------ dispatch

    async def __call__(self, scope, receive, send_fn) -> None:
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send_fn)
        if scope["type"] != "http":
            return None
        started = time.monotonic()
        route, handler = self._route(scope["method"], scope["path"])
        self.in_flight += 1
        try:
            status = await handler(scope, receive, send_fn)
        except asyncio.CancelledError:  # uvicorn's graceful-shutdown timeout: it answers 500 if anything
            self.cut += 1
            emit("unanswered", route=route, reason="the server stopped before the request was complete")
            raise
        except HTTPError as exc:
            status = exc.status
            if status != 499:  # nobody is left to answer
                await send_error(send_fn, exc)
            emit("rejected", route=route, status=status, reason=exc.message)
        except JobError as exc:  # the model failed on a valid request: the server's fault, reported as 500
            status = 500
            await send_error(send_fn, HTTPError(500, f"{exc.kind} error: {exc}"))
            emit("failed", route=route, status=status, reason=str(exc))
        finally:
            self.in_flight -= 1
        self.metrics.request(route, status, time.monotonic() - started)
        return None

    def _route(self, method: str, path: str):
        handler = self.fixed.get((method, path))
        if handler is not None:
            return path, handler
        if path in self._fixed_paths:
            return path, _refuse(405, f"{method} is not allowed on {path}")
        parts = path.strip("/").split("/")
        if len(parts) >= 3 and parts[:2] == ["v2", "models"]:
            return self._v2_route(method, parts[2], parts[3:])
        return "other", _refuse(404, "no such route")

    def _v2_route(self, method: str, name: str, rest: list[str]):
        if name != self.settings.model_name:
            return "/v2/models/{other}", _refuse(404, "no such model")
        if len(rest) >= 2 and rest[0] == "versions":
            rest = rest[2:]  # one version is served: the loaded run
        action = rest[0] if rest else ""
        route = V2_ROUTES.get(action, V2_OTHER)  # never built from the path: the label set stays fixed
        wanted = {"": "GET", "ready": "GET", "infer": "POST"}.get(action)
        if wanted is None or len(rest) > 1:
            return route, _refuse(404, "no such route")
        if method != wanted:
            return route, _refuse(405, f"{method} is not allowed here")
        return route, {"": self._model_metadata, "ready": self._ready, "infer": self._v2_infer}[action]

    # ------------------------------------------------------------------ health and metadata

    def _require_ready(self) -> None:
        if not self.ready:
            if self.draining:
                raise HTTPError(503, "draining: the server is shutting down")
            raise HTTPError(503, self.problem or "not ready: the model is loading")

    async def _live(self, scope, receive, send_fn) -> int:
        await send_json(send_fn, 200, {"live": True})
        return 200

    async def _ready(self, scope, receive, send_fn) -> int:
        self._require_ready()
        await send_json(send_fn, 200, {"ready": True})
        return 200

    async def _server_metadata(self, scope, receive, send_fn) -> int:
        await send_json(send_fn, 200, v2.server_metadata())
        return 200

    async def _model_metadata(self, scope, receive, send_fn) -> int:
        if self.model is None:
            self._require_ready()
        await send_json(send_fn, 200, v2.model_metadata(self.settings.model_name, self.model))
        return 200

    async def _metrics(self, scope, receive, send_fn) -> int:
        body, content_type = self.metrics.exposition()
        await send(send_fn, 200, body, content_type)
        return 200

    # ------------------------------------------------------------------ inference

    async def _parsed(self, scope, receive, parse, images: bool = False):
        """A loaded model, the bounded body, then `parse(body)` -> images, counted as arriving for the batcher.
        `images`: the body may hold image bytes, always parsed in the decode pool; other bodies there when large.
        While draining, a request that reached the server is still answered: only readiness drops."""
        if self.model is None:
            self._require_ready()
        self.batcher.arrive()
        try:
            body = await read_body(scope, receive, self.settings.max_body_bytes)
            if (images and not fits_on_loop(body)) or len(body) > OFF_LOOP_BYTES:
                return body, await asyncio.get_running_loop().run_in_executor(self._decode, parse, body)
            try:
                return body, parse_on_loop(parse, body)
            except NotForTheLoop:  # its header lied to fits_on_loop: decoded where a large image belongs
                return body, await asyncio.get_running_loop().run_in_executor(self._decode, parse, body)
        finally:
            self.batcher.arrived()

    async def _v2_infer(self, scope, receive, send_fn) -> int:
        s, length = self.settings, header(scope, v2.HEADER_LENGTH)
        _, (request_id, images, binary) = await self._parsed(
            scope, receive, lambda body: v2.parse_infer(body, length, s.max_batch, s.max_body_bytes)
        )
        probs = await self.batcher.submit(images)
        body, extra = v2.infer_response(s.model_name, self.model, request_id, probs, binary)
        content_type = b"application/octet-stream" if binary else b"application/json"
        await send(send_fn, 200, body, content_type, extra)
        return 200

    async def _invocations(self, scope, receive, send_fn) -> int:
        s, content_type = self.settings, header(scope, b"content-type")
        _, images = await self._parsed(
            scope,
            receive,
            lambda body: sagemaker.parse_invocation(content_type, body, s.max_batch, s.max_body_bytes),
            images=True,
        )
        return await self._answer_predictions(send_fn, images)

    async def _vertex_predict(self, scope, receive, send_fn) -> int:
        s = self.settings
        _, images = await self._parsed(
            scope, receive, lambda body: vertex.parse_request(body, s.max_batch, s.max_body_bytes), images=True
        )
        return await self._answer_predictions(send_fn, images)

    async def _answer_predictions(self, send_fn, images) -> int:
        probs = await self.batcher.submit(images)
        await send(send_fn, 200, predictions_json(probs, self.model.class_names))
        return 200


def _refuse(status: int, message: str):
    async def handler(scope, receive, send_fn) -> int:
        raise HTTPError(status, message)

    return handler

"""The `job serve` process: the port opens at once (liveness), the model loads and warms up (then readiness),
and SIGTERM drains: readiness drops, after --drain-delay-s the listener closes, every accepted request is answered, then exit 0
(within --grace-s, which must sit under the platform's grace period: Kubernetes 30 s, SageMaker and Vertex AI
longer)."""

import signal
import threading

from job.errors import EXIT_OK
from job.runtime.events import claim_stdout, emit
from job.serve import loading, settings
from job.serve.app import App

add_arguments = settings.add_arguments

HEADER_BYTES = 64 * 1024  # a request line plus headers larger than this is refused by the HTTP parser


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, with SIGTERM/SIGINT first dropping readiness, and not re-raised after the drain
        (uvicorn re-raises a caught signal once it stops; the drain is this process's whole answer to it)."""

        app: App

        def handle_exit(self, sig, frame) -> None:
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
                return
            if self.app.draining:
                return
            self.app.drain()
            delay = self.app.settings.drain_delay_s
            if delay <= 0:
                self.should_exit = True
                return
            timer = threading.Timer(delay, setattr, (self, "should_exit", True))
            timer.daemon = True
            timer.start()

    return Server


def run(args) -> int:
    import uvicorn

    s = settings.resolve(args)
    claim_stdout()  # stdout: one JSON line per event and per inference batch; stderr: people's lines

    def load():
        model = loading.load(s.model, threads=s.threads, int8=s.int8, trust=s.trust)
        loading.warm_up(model, s.max_batch, s.warmup)
        return model

    app = App(s, load)
    config = uvicorn.Config(
        app,
        host=s.host,
        port=s.port,
        lifespan="on",
        access_log=False,  # the app logs batches and refusals as JSON
        log_level="warning",
        timeout_graceful_shutdown=s.grace_s,
        timeout_keep_alive=5,
        h11_max_incomplete_event_size=HEADER_BYTES,
        server_header=False,
    )
    server = _server_class()(config)
    server.app = app
    emit("serve_started", host=s.host, port=s.port, model=s.model, max_batch=s.max_batch, max_queue=s.max_queue)
    server.run()
    # drained: stopped by SIGTERM with every request answered by the app (none cut at the end of --grace-s)
    emit("serve_stopped", drained=app.draining and app.unanswered == 0, unanswered=app.unanswered)
    return EXIT_OK

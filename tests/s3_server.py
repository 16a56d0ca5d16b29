"""A real S3-compatible server on 127.0.0.1 for the tests, and a fault-injecting HTTP proxy in front of it.

By default `moto_server` (speaking real HTTP) is started on a free port. Set S3_TEST_ENDPOINT (plus
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) to run the same tests against another S3 endpoint instead.
"""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoServer:
    def __init__(self):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        exe = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
        self.proc = subprocess.Popen(
            [exe, "-H", "127.0.0.1", "-p", str(self.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.endpoint, timeout=1).read()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("moto_server exited at start") from None
                time.sleep(0.2)
        raise RuntimeError("moto_server did not start within 30s")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_server():
    endpoint = os.environ.get("S3_TEST_ENDPOINT")
    if endpoint:
        return endpoint, None
    server = MotoServer()
    return server.endpoint, server


class FaultProxy:
    """Forwards HTTP to `upstream`; injects faults by request number (1-based, counted over all requests).

    fail_first=N   answer 503 SlowDown to the first N requests      (retries should succeed)
    drop_first=N   close the connection without answering the first N requests
    fail_after=K   answer 503 to every request after the K-th whose method is in `methods`
    """

    def __init__(self, upstream: str, *, fail_first=0, drop_first=0, fail_after=None, methods=None):
        self.upstream = upstream.split("://", 1)[1]
        self.fail_first, self.drop_first, self.fail_after = fail_first, drop_first, fail_after
        self.methods = methods
        self.count = 0
        self.injected = 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                with proxy.lock:
                    proxy.count += 1
                    n = proxy.count
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fault = proxy.fault_for(n, self.command)
                if fault == "drop":
                    proxy.injected += 1
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault == "503":
                    proxy.injected += 1
                    payload = b"<Error><Code>SlowDown</Code><Message>injected</Message></Error>"
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "keep-alive")}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def fault_for(self, n: int, method: str):
        if n <= self.drop_first:
            return "drop"
        if n <= self.fail_first:
            return "503"
        if self.fail_after is not None and n > self.fail_after and (self.methods is None or method in self.methods):
            return "503"
        return None

    def close(self):
        self.server.shutdown()
        self.server.server_close()

"""A real S3-compatible server on 127.0.0.1 for the tests, and a fault-injecting HTTP proxy in front of it.

By default `moto_server` (speaking real HTTP) is started on a free port. Set S3_TEST_ENDPOINT (plus
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) to run the same tests against another S3 endpoint instead.
"""

from __future__ import annotations

import hashlib
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

    Faults on the bytes of objects (a PUT or GET of a key, never a listing), counted per kind, limited to keys
    containing `match` when given:
    corrupt_put=N  flip one byte of the body of the first N object PUTs (headers unchanged) before forwarding
    keep_etag      with corrupt_put: answer the ETag of the bytes that were sent, not of those stored
    fake_put=N     answer 200 (ETag of the body) to the first N object PUTs without forwarding them
    truncate_get=N answer the first N object GETs with the full Content-Length but half the body, then close
    short_get=N    answer the first N object GETs with a body one byte shorter and a matching Content-Length
    replace_get=N  answer the first N object GETs with `replace_body` (200, its own length and ETag) without
                   forwarding them: a store whose object changes between reads (the N+1-th GET sees the stored one)
    """

    def __init__(
        self,
        upstream: str,
        *,
        fail_first=0,
        drop_first=0,
        fail_after=None,
        methods=None,
        corrupt_put=0,
        keep_etag=False,
        fake_put=0,
        truncate_get=0,
        short_get=0,
        replace_get=0,
        replace_body=b"",
        match="",
    ):
        self.upstream = upstream.split("://", 1)[1]
        self.fail_first, self.drop_first, self.fail_after = fail_first, drop_first, fail_after
        self.methods = methods
        self.corrupt_put, self.keep_etag, self.fake_put = corrupt_put, keep_etag, fake_put
        self.truncate_get, self.short_get, self.match = truncate_get, short_get, match
        self.replace_get, self.replace_body = replace_get, replace_body
        self.seen = {"PUT": 0, "GET": 0}
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
                sent, object_fault = body, proxy.object_fault(self.command, self.path, body)
                if object_fault == "fake":
                    proxy.injected += 1
                    self.send_response(200)
                    self.send_header("ETag", f'"{hashlib.md5(body).hexdigest()}"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if object_fault == "replace":
                    proxy.injected += 1
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("ETag", f'"{hashlib.md5(proxy.replace_body).hexdigest()}"')
                    self.send_header("Content-Length", str(len(proxy.replace_body)))
                    self.end_headers()
                    self.wfile.write(proxy.replace_body)
                    return
                if object_fault == "corrupt":
                    proxy.injected += 1
                    body = body[: len(body) // 2] + bytes([body[len(body) // 2] ^ 0x01]) + body[len(body) // 2 + 1 :]
                conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "keep-alive")}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                length = len(data)
                if object_fault == "short" and resp.status == 200 and data:
                    proxy.injected += 1
                    data = data[:-1]
                    length = len(data)
                elif object_fault == "truncate" and resp.status == 200 and data:
                    proxy.injected += 1
                    data = data[: len(data) // 2]
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        if k.lower() == "etag" and object_fault == "corrupt" and proxy.keep_etag:
                            v = f'"{hashlib.md5(sent).hexdigest()}"'
                        self.send_header(k, v)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                if object_fault == "truncate":
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
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

    def object_fault(self, method: str, path: str, body: bytes):
        """The fault for a PUT or GET of an object key (path style: /bucket/key...), if one is due."""
        bare, _, query = path.partition("?")
        parts = bare.split("/", 2)
        is_object = len(parts) == 3 and parts[2] != "" and "list-type" not in query
        if method not in self.seen or not is_object or self.match not in bare or "uploads" in query.split("&"):
            return None
        if method == "PUT" and not body:
            return None
        with self.lock:
            self.seen[method] += 1
            n = self.seen[method]
        if method == "PUT":
            return "fake" if n <= self.fake_put else "corrupt" if n <= self.corrupt_put else None
        if n <= self.replace_get:
            return "replace"
        return "truncate" if n <= self.truncate_get else "short" if n <= self.short_get else None

    def close(self):
        self.server.shutdown()
        self.server.server_close()

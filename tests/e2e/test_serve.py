"""`python -m job serve` on 127.0.0.1: every protocol answers what `job predict` prints for the same JPEG
(|Δp| = 0), readiness waits for the load and the warm-up, every hostile request gets its documented status while
the server keeps serving, and SIGTERM under load answers every request the server accepted, then exits 0."""

import base64
import http.client
import json
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import ROOT, class_image, contract_model, job_env, make_run_dir, run_job
from s3_server import free_port

CLASSES = 3


def slow_model(path: Path, matmuls: int = 6) -> Path:
    """A contract model with a heavy, result-neutral branch (ConstantOfShape weights: nothing large on disk), so a
    request takes milliseconds: enough for a queue to fill and for SIGTERM to land mid-batch."""
    from onnx import TensorProto, helper, numpy_helper

    contract_model(path, classes=CLASSES, run_id=path.parent.name)
    import onnx

    model = onnx.load(path)
    g = model.graph
    softmax = next(n for n in g.node if n.op_type == "Softmax")
    softmax.input[0] = "picked_plus"
    g.initializer.extend(
        [
            numpy_helper.from_array(np.array([-1, 3072], np.int64), "flat"),
            numpy_helper.from_array(np.array([3072, 3072], np.int64), "wshape"),
            numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        ]
    )
    nodes = [
        helper.make_node("Reshape", ["f", "flat"], ["h0"]),
        helper.make_node(
            "ConstantOfShape", ["wshape"], ["w"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1e-4])
        ),
    ]
    for i in range(matmuls):
        nodes.append(helper.make_node("MatMul", [f"h{i}", "w"], [f"h{i + 1}"]))
    nodes += [
        helper.make_node("ReduceSum", [f"h{matmuls}"], ["heavy_sum"], keepdims=0),
        helper.make_node("Mul", ["heavy_sum", "zero"], ["nothing"]),
        helper.make_node("Add", ["picked", "nothing"], ["picked_plus"]),
    ]
    at = list(g.node).index(softmax)
    for offset, node in enumerate(nodes):
        g.node.insert(at + offset, node)
    onnx.save(model, path)
    return path


def run_folder(base: Path, name: str, model_fn=None) -> Path:
    model = model_fn or (lambda path: contract_model(path, classes=CLASSES, run_id=name))
    return make_run_dir(base, name, run_id=name, files={"model.onnx": model})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("serve-runs")
    return {"fast": run_folder(base, "serve-1"), "slow": run_folder(base, "serve-slow", slow_model), "base": base}


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    """Real JPEGs: 32x32, a larger photo-like one (resized by the gate) and a grey one."""
    d = tmp_path_factory.mktemp("jpegs")
    rng = np.random.default_rng(3)
    Image.fromarray(class_image(1, rng)).save(d / "a.jpg", quality=90)
    Image.fromarray(class_image(4, rng)).resize((96, 64)).save(d / "b.jpg", quality=75)
    Image.fromarray(class_image(8, rng)).convert("L").save(d / "c.jpg")
    Image.fromarray(class_image(2, rng)).save(d / "d.png")
    return sorted(d.iterdir())


class Server:
    def __init__(self, model: str | None, *args: str, env: dict | None = None, tmp: Path, port: int | None = None):
        """`port`: the one the environment names (AIP_HTTP_PORT); else a free one, given as --port."""
        self.port = port or free_port()
        self.out, self.err = tmp / f"serve-{self.port}.out", tmp / f"serve-{self.port}.err"
        argv = [sys.executable, "-m", "job", "serve", *([model] if model else []), "--host", "127.0.0.1"]
        argv += [*([] if port else ["--port", str(self.port)]), *args]
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen(argv, cwd=ROOT, env=job_env(**(env or {})), stdout=out, stderr=err)

    def request(self, method, path, body=None, headers=None, timeout=30):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read(), dict(response.getheaders())
        finally:
            conn.close()

    def json(self, method, path, doc=None, headers=None):
        body = None if doc is None else json.dumps(doc).encode()
        status, raw, _ = self.request(method, path, body, {"Content-Type": "application/json", **(headers or {})})
        return status, json.loads(raw) if raw else None

    def wait_live(self, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.err.read_text()
            try:
                return self.request("GET", "/v2/health/live", timeout=2)[0]
            except OSError:
                time.sleep(0.05)
        raise AssertionError("the server never answered")

    def wait_ready(self, timeout=60):
        self.wait_live()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.request("GET", "/v2/health/ready")[0] == 200:
                return
            assert self.proc.poll() is None, self.err.read_text()
            time.sleep(0.05)
        raise AssertionError(f"never ready: {self.err.read_text()[-2000:]}")

    def events(self):
        return [json.loads(line) for line in self.out.read_text().splitlines() if line.startswith("{")]

    def stop(self, timeout=30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


@pytest.fixture
def serve(tmp_path):
    started = []

    def start(model, *args, env=None, ready=True):
        server = Server(model, *args, env=env, tmp=tmp_path)
        started.append(server)
        if ready:
            server.wait_ready()
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


def v2_doc(pixels: np.ndarray, name="image", datatype="UINT8", shape=None, **extra):
    return {
        "id": "r-1",
        "inputs": [
            {"name": name, "datatype": datatype, "shape": shape or list(pixels.shape), "data": pixels.ravel().tolist()}
        ],
        **extra,
    }


def gate_pixels(path: Path) -> np.ndarray:
    from job.gates.images import model_input

    return model_input(path.read_bytes(), path.name)[0]


# ----------------------------------------------------------------------------- the protocols


def test_every_protocol_answers_exactly_what_predict_prints(runs, jpegs, serve):
    proc = run_job("predict", str(runs["fast"]), *map(str, jpegs), "--json")
    assert proc.returncode == 0, proc.stderr
    expected = {
        Path(r["input"]).name: list(r["probabilities"].values()) for r in map(json.loads, proc.stdout.split("\n")[:-1])
    }
    env = {"AIP_HEALTH_ROUTE": "/vertex/health", "AIP_PREDICT_ROUTE": "/vertex/predict"}
    server = serve(str(runs["fast"]), env=env)
    names = [p.name for p in jpegs]
    pixels = np.stack([gate_pixels(p) for p in jpegs])
    assert server.request("GET", "/vertex/health")[0] == 200 and server.request("GET", "/ping")[0] == 200

    # v2, JSON tensor of the whole batch
    status, doc = server.json("POST", "/v2/models/cifar10/infer", v2_doc(pixels))
    assert status == 200, doc
    out = doc["outputs"][0]
    assert doc["id"] == "r-1" and doc["model_version"] == "serve-1" and out["datatype"] == "FP32"
    assert out["shape"] == [len(jpegs), CLASSES]
    got = np.array(out["data"]).reshape(out["shape"]).tolist()
    assert dict(zip(names, got, strict=True)) == expected
    # v2, binary tensor extension in and out (tritonclient's default), one image, under a version path
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "UINT8",
                    "shape": [1, 32, 32, 3],
                    "parameters": {"binary_data_size": 3072},
                }
            ],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
        }
    ).encode()
    status, raw, headers = server.request(
        "POST",
        "/v2/models/cifar10/versions/serve-1/infer",
        head + pixels[0].tobytes(),
        {"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"},
    )
    assert status == 200, raw
    length = int(headers["inference-header-content-length"])
    assert np.frombuffer(raw[length:], "<f4").tolist() == expected[names[0]]
    # SageMaker: the JPEG/PNG bytes themselves, and a JSON tensor
    for path in jpegs:
        kind = "image/png" if path.suffix == ".png" else "image/jpeg"
        status, raw, _ = server.request("POST", "/invocations", path.read_bytes(), {"Content-Type": kind})
        assert status == 200, raw
        (prediction,) = json.loads(raw)["predictions"]
        assert prediction["probabilities"] == expected[path.name]
        assert prediction["label"] == f"c{int(np.argmax(expected[path.name]))}"
    status, doc = server.json("POST", "/invocations", pixels.tolist())
    assert [p["probabilities"] for p in doc["predictions"]] == [expected[n] for n in names]
    # Vertex AI: {"instances": [...]} on AIP_PREDICT_ROUTE, as b64 image bytes and as pixels
    instances = [{"b64": base64.b64encode(p.read_bytes()).decode()} for p in jpegs] + [pixels[1].tolist()]
    status, doc = server.json("POST", "/vertex/predict", {"instances": instances})
    assert status == 200, doc
    got = [p["probabilities"] for p in doc["predictions"]]
    assert got == [expected[n] for n in names] + [expected[names[1]]]
    # metadata and metrics
    status, meta = server.json("GET", "/v2/models/cifar10")
    assert meta["inputs"] == [{"name": "image", "datatype": "UINT8", "shape": [-1, 32, 32, 3]}]
    assert meta["outputs"][0]["shape"] == [-1, CLASSES] and meta["versions"] == ["serve-1"]
    status, raw, _ = server.request("GET", "/metrics")
    assert b'serve_requests_total{route="/invocations",status="200"} 5.0' in raw and b"serve_batch_images_bucket" in raw
    batches = [e for e in server.events() if e["event"] == "batch"]
    assert batches and all({"images", "requests", "infer_ms", "wait_ms"} <= set(e) for e in batches)
    assert server.stop() == 0


def test_vertex_reads_its_port_and_model_from_the_aip_variables(runs, serve, tmp_path):
    import shutil

    mount = tmp_path / "gcs"
    shutil.copytree(runs["fast"], mount / "bucket" / "model")
    port = free_port()
    env = {
        "AIP_HTTP_PORT": str(port),
        "AIP_STORAGE_URI": "gs://bucket/model",
        "AIP_HEALTH_ROUTE": "/v1/endpoints/1/deployedModels/2",
        "AIP_PREDICT_ROUTE": "/v1/endpoints/1/deployedModels/2:predict",
        "JOB_SERVE_GCS_MOUNT": str(mount),
    }
    server = Server(None, env=env, tmp=tmp_path, port=port)  # no model argument, no --port flag
    try:
        server.wait_ready()
        assert server.request("GET", "/v1/endpoints/1/deployedModels/2")[0] == 200
        status, doc = server.json(
            "POST", "/v1/endpoints/1/deployedModels/2:predict", {"instances": [[[[0, 0, 9]] * 32] * 32]}
        )
        assert status == 200 and len(doc["predictions"]) == 1
    finally:
        server.proc.kill()


# ----------------------------------------------------------------------------- readiness


def test_not_ready_until_the_model_is_loaded_and_warmed_up(runs, serve):
    server = serve(str(runs["slow"]), "--warmup", "40", "--max-batch", "8", ready=False)
    assert server.wait_live() == 200
    status, doc = server.json("GET", "/v2/health/ready")
    assert status == 503 and "loading" in doc["error"]
    assert server.request("GET", "/ping")[0] == 503
    status, doc = server.json("POST", "/v2/models/cifar10/infer", v2_doc(np.zeros((1, 32, 32, 3), np.uint8)))
    assert status == 503
    server.wait_ready()
    ready = next(e for e in server.events() if e["event"] == "serve_ready")
    assert ready["warmup_s"] > 0 and ready["run_id"] == "serve-slow"
    status, doc = server.json("POST", "/v2/models/cifar10/infer", v2_doc(np.zeros((1, 32, 32, 3), np.uint8)))
    assert status == 200


def test_a_tampered_store_is_never_served(runs, serve, tmp_path):
    import shutil

    store = tmp_path / "tampered"
    shutil.copytree(runs["fast"], store)
    contract_model(store / "model.onnx", classes=CLASSES, run_id="swapped")  # after the manifest was written
    server = serve(str(store), ready=False)
    server.wait_live()
    deadline = time.monotonic() + 30
    while not any(e["event"] == "model_failed" for e in server.events()) and time.monotonic() < deadline:
        time.sleep(0.1)
    status, doc = server.json("GET", "/v2/health/ready")
    assert status == 503 and "manifest" in doc["error"]
    assert server.json("POST", "/invocations", [[[0, 0, 0]] * 32] * 32)[0] == 503
    assert server.proc.poll() is None and server.request("GET", "/v2/health/live")[0] == 200
    assert "error: data error:" in server.err.read_text()


def test_an_unsigned_model_is_refused_when_a_public_key_is_given(runs, serve, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = tmp_path / "trusted.pub"
    pem.write_bytes(key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    server = serve(str(runs["fast"]), "--public-key", str(pem), ready=False)
    server.wait_live()
    deadline = time.monotonic() + 30
    while not any(e["event"] == "model_failed" for e in server.events()) and time.monotonic() < deadline:
        time.sleep(0.1)
    status, doc = server.json("GET", "/v2/health/ready")
    assert status == 503 and "sig" in doc["error"].lower(), doc
    assert server.request("GET", "/ping")[0] == 503


# ----------------------------------------------------------------------------- hostile requests


def _big_body(port: int, size: int) -> tuple[int, float]:
    """POST a `size`-byte body as a hostile client would: the status line the server answers, and how long it
    took. The server may answer and close before the body is sent; that is the point."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(
            f"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: {size}\r\n\r\n".encode()
        )
        chunk = b"\0" * (1 << 20)
        try:
            for _ in range(size // len(chunk)):
                s.sendall(chunk)
        except OSError:
            pass  # the server closed the connection after its 413
        answer = s.recv(200)
    return int(answer.split()[1]), time.monotonic() - started


def test_hostile_requests_get_their_status_and_the_server_keeps_serving(runs, serve, tmp_path):
    server = serve(str(runs["fast"]), "--max-batch", "8")
    good = v2_doc(np.full((1, 32, 32, 3), 9, np.uint8))
    infer = "/v2/models/cifar10/infer"
    image = np.zeros((1, 32, 32, 3), np.uint8)
    cases = [
        (infer, v2_doc(image, datatype="FP32"), 400),
        (infer, v2_doc(image, name="input_1"), 400),
        (infer, v2_doc(image, shape=[1, 32, 32, 4]), 400),
        (infer, v2_doc(image, shape=[1, 32, 32]), 400),
        (infer, {**good, "inputs": [{**good["inputs"][0], "data": [300] * 3072}]}, 400),
        (infer, {**good, "inputs": [{**good["inputs"][0], "data": [1.5] * 3072}]}, 400),
        (infer, {**good, "inputs": [{**good["inputs"][0], "data": ["a"] * 3072}]}, 400),
        (infer, {**good, "inputs": [{**good["inputs"][0], "data": [1] * 3071}]}, 400),
        (infer, {**good, "inputs": [{**good["inputs"][0], "data": [[1, 2], [3]]}]}, 400),
        (infer, {"inputs": "image"}, 400),
        (infer, v2_doc(np.zeros((9, 32, 32, 3), np.uint8)), 413),  # more images than --max-batch
        ("/invocations", [[[1, 2]] * 32] * 32, 400),
        ("/invocations", {"instances": [{"b64": "not base64!"}]}, 400),
        ("/invocations", {"instances": [[[[0, 0, 0]] * 32] * 32] * 9}, 413),
        ("/v2/models/other/infer", good, 404),
        ("/nowhere", good, 404),
    ]
    for path, doc, expected in cases:
        status, answer = server.json("POST", path, doc)
        assert status == expected, (path, doc if len(str(doc)) < 200 else str(doc)[:200], answer)
        assert set(answer) == {"error"}
    nested = "[" * 100_000 + "]" * 100_000
    status, raw, _ = server.request("POST", infer, nested.encode(), {"Content-Type": "application/json"})
    assert status == 400 and b"nested" in raw
    status, raw, _ = server.request("POST", infer, b"{not json", {"Content-Type": "application/json"})
    assert status == 400
    # a non-image, a PDF, a truncated JPEG under an image Content-Type; an unknown Content-Type
    for body in (b"hello, not an image", b"%PDF-1.4\n...", Image_bytes()[:300]):
        status, raw, _ = server.request("POST", "/invocations", body, {"Content-Type": "image/jpeg"})
        assert status == 400, raw
    assert server.request("POST", "/invocations", b"x", {"Content-Type": "text/plain"})[0] == 415
    assert server.request("GET", infer)[0] == 405
    # 50 MB: refused from its Content-Length, before it is read
    status, seconds = _big_body(server.port, 50 * 1024 * 1024)
    assert status == 413

    # chunked, no Content-Length: refused once it passes the bound
    def chunks():
        for _ in range(8):
            yield b"\0" * (1 << 20)

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("POST", "/invocations", body=chunks(), headers={"Content-Type": "image/png"}, encode_chunked=True)
        assert conn.getresponse().status == 413
    except (BrokenPipeError, ConnectionResetError):
        pass  # closed after the 413, while the client was still sending
    finally:
        conn.close()
    # still serving, and the refusals were logged one line each, shown safely
    status, doc = server.json("POST", infer, good)
    assert status == 200
    rejected = [e for e in server.events() if e["event"] == "rejected"]
    assert {e["status"] for e in rejected} >= {400, 404, 405, 413, 415}
    assert server.proc.poll() is None


def Image_bytes() -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(class_image(3, np.random.default_rng(0), size=(64, 64))).save(buffer, "JPEG")
    return buffer.getvalue()


def test_a_burst_beyond_the_queue_gets_429_and_the_rest_are_answered(runs, serve):
    server = serve(str(runs["slow"]), "--max-batch", "2", "--max-queue", "4", "--threads", "1")
    body = json.dumps(v2_doc(np.zeros((1, 32, 32, 3), np.uint8))).encode()
    statuses, lock = [], threading.Lock()
    gate = threading.Barrier(48)

    def one():
        gate.wait()
        status, _, headers = server.request(
            "POST", "/v2/models/cifar10/infer", body, {"Content-Type": "application/json"}, timeout=60
        )
        with lock:
            statuses.append((status, headers.get("retry-after")))

    threads = [threading.Thread(target=one) for _ in range(48)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = [s for s, _ in statuses]
    assert set(codes) == {200, 429}, codes
    assert codes.count(429) >= 20 and all(r == "1" for s, r in statuses if s == 429)
    status, _ = server.json("POST", "/v2/models/cifar10/infer", v2_doc(np.zeros((1, 32, 32, 3), np.uint8)))
    assert status == 200
    images = sum(e["images"] for e in server.events() if e["event"] == "batch")
    assert images >= codes.count(200) + 1


# ----------------------------------------------------------------------------- SIGTERM


def test_sigterm_under_load_answers_every_accepted_request_and_exits_0(runs, serve):
    server = serve(str(runs["slow"]), "--max-batch", "4", "--max-queue", "64", "--warmup", "1")
    body = json.dumps(v2_doc(np.zeros((1, 32, 32, 3), np.uint8))).encode()
    answered, refused, lost, lock = [], [], [], threading.Lock()
    stop = threading.Event()

    def client():
        while not stop.is_set():
            try:
                status, _, _ = server.request(
                    "POST", "/v2/models/cifar10/infer", body, {"Content-Type": "application/json"}, timeout=60
                )
            except ConnectionRefusedError:
                with lock:
                    refused.append(1)  # after the listener closed: never accepted
                time.sleep(0.01)
                continue
            except (http.client.RemoteDisconnected, ConnectionResetError) as exc:
                with lock:
                    lost.append(repr(exc))
                continue
            with lock:
                answered.append(status)

    threads = [threading.Thread(target=client) for _ in range(12)]
    for t in threads:
        t.start()
    while len(answered) < 20:
        time.sleep(0.02)
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    code = server.proc.wait(30)
    drained_in = time.monotonic() - started
    stop.set()
    for t in threads:
        t.join()
    print(
        f"SIGTERM under load: {answered.count(200)} answered, {len(answered) - answered.count(200)} other, "
        f"{len(refused)} refused after the listener closed, {len(lost)} closed unread; exit {code} in {drained_in:.2f}s"
    )
    assert code == 0, server.err.read_text()[-2000:]
    assert drained_in < 25
    inferred = sum(e["images"] for e in server.events() if e["event"] == "batch")
    ok = answered.count(200)
    # every image the server inferred reached its client, and every answer was a 200 or the draining 503
    assert set(answered) == {200}
    assert inferred == ok, (inferred, ok, lost)
    events = [e["event"] for e in server.events()]
    assert "serve_draining" in events and events[-1] == "serve_stopped"


def test_a_drain_delay_drops_readiness_first_and_keeps_answering(runs, serve):
    server = serve(str(runs["fast"]), "--drain-delay-s", "2", "--grace-s", "5")
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    status, doc = server.json("GET", "/v2/health/ready")
    assert status == 503 and "draining" in doc["error"]
    assert server.request("GET", "/v2/health/live")[0] == 200
    status, _ = server.json("POST", "/v2/models/cifar10/infer", v2_doc(np.zeros((1, 32, 32, 3), np.uint8)))
    assert status == 200  # load balancers still sending during the delay are answered
    assert server.proc.wait(15) == 0 and time.monotonic() - started >= 2


# ----------------------------------------------------------------------------- the security review's findings


def palette_bomb(side: int, mode: str = "1") -> bytes:
    """A decompression bomb for the alpha step: a `side` x `side` 1-bit palette PNG (mode "1" or "P") with a
    transparent entry (tRNS), a few KB that Pillow decodes to side² pixels, then RGBA. 7000: 49 MP, 6 KB."""
    import io

    buffer = io.BytesIO()
    if mode == "P":
        image = Image.new("P", (side, side), 0)
        image.putpalette([0, 0, 0, 255, 255, 255])
        image.save(buffer, "PNG", transparency=0, bits=1, optimize=True)
    else:
        Image.new(mode, (side, side), 0).save(buffer, "PNG", **({"transparency": 0} if mode == "1" else {}))
    return buffer.getvalue()


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


# What decoding may add to the server's peak memory (docs/serving.md#memory): DECODE_THREADS (2) images at once,
# each within the gate's bound at SERVE_MAX_PIXELS (16 MP x 8 bytes: the decoded image and the RGB result, 4 bytes
# a pixel each) plus about 10 MB of bands and the request's bytes. Before the fix one 16 MP bomb took 830-920 MB.
DECODE_PEAK_MB = 2 * (16 * 8 + 30)


def test_an_image_bomb_costs_a_bounded_decode_and_never_stalls_liveness(runs, serve):
    server = serve(str(runs["fast"]))
    before = peak_rss_mb(server.proc.pid)
    # the tester's 6 KB bomb (49 MP): refused from its header, at once
    for mode in ("1", "P"):
        bomb = palette_bomb(7000, mode)
        assert len(bomb) < 10_000
        started = time.monotonic()
        status, raw, _ = server.request("POST", "/invocations", bomb, {"Content-Type": "image/png"})
        assert status == 400 and b"exceeds limit of 16,000,000 pixels" in raw, raw
        assert time.monotonic() - started < 1.0
    # just under the bound (16 MP, palette and grey + alpha: the worst 4 bytes a pixel), four at once, in both
    # image protocols: decoded in the pool, two at a time, while liveness keeps answering
    bombs = [palette_bomb(4000, "1"), palette_bomb(4000, "LA")]
    statuses, live, done = [], [], threading.Event()

    def post(i):
        blob = bombs[i % 2]
        if i < 2:
            statuses.append(server.request("POST", "/invocations", blob, {"Content-Type": "image/png"}, 120)[0])
        else:
            doc = {"instances": [{"b64": base64.b64encode(blob).decode()}]}
            statuses.append(server.json("POST", "/invocations", doc)[0])

    def liveness():
        while not done.is_set():
            started = time.monotonic()
            assert server.request("GET", "/v2/health/live", timeout=10)[0] == 200
            live.append(time.monotonic() - started)
            time.sleep(0.02)

    prober = threading.Thread(target=liveness)
    prober.start()
    posts = [threading.Thread(target=post, args=(i,)) for i in range(4)]
    for t in posts:
        t.start()
    for t in posts:
        t.join()
    done.set()
    prober.join()
    peak = peak_rss_mb(server.proc.pid)
    print(f"16 MP bombs x4: peak RSS {before:.0f} -> {peak:.0f} MB, slowest liveness {max(live) * 1000:.0f} ms")
    assert statuses == [200] * 4
    assert len(live) > 5 and max(live) < 0.5, live
    assert peak - before < DECODE_PEAK_MB, (before, peak)
    assert server.proc.poll() is None


def test_only_small_images_declaring_few_pixels_are_decoded_on_the_event_loop():
    """The routing of image bodies (job.serve.images.fits_on_loop): a tiny JPEG or PNG is decoded on the event loop;
    a bomb (few bytes, many pixels), a body over 16 KiB, an odd header and every other format go to the pool."""
    import io

    from job.serve.images import LOOP_BYTES, fits_on_loop

    def saved(size, fmt, **kw) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(class_image(1, np.random.default_rng(0), size=size)).save(buffer, fmt, **kw)
        return buffer.getvalue()

    for fmt, kw in (("JPEG", {}), ("JPEG", {"progressive": True}), ("JPEG", {"exif": b"Exif\x00\x00" + bytes(64)}),
                    ("PNG", {})):  # fmt: skip
        assert fits_on_loop(saved((32, 32), fmt, **kw)) and fits_on_loop(saved((64, 64), fmt, **kw))
        assert not fits_on_loop(saved((65, 64), fmt, **kw))
    bomb = palette_bomb(7000)
    assert len(bomb) < LOOP_BYTES and not fits_on_loop(bomb)
    tiny = saved((32, 32), "JPEG")
    assert not fits_on_loop(tiny + bytes(LOOP_BYTES))  # trailing bytes: the body bound, whatever the header
    for odd in (b"", tiny[:2], tiny[:20], b"\xff\xd8" + bytes(30), saved((32, 32), "GIF"), saved((32, 32), "BMP")):
        assert not fits_on_loop(odd)


def _png_two_ihdr(w=4000, h=4000) -> bytes:
    """15 KB: a 1x1 IHDR (what a router reading the first header sees), then a 4000x4000 one (what Pillow keeps)."""

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    ihdr = lambda w, h: chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))  # noqa: E731
    idat = zlib.compress((b"\0" * (w + 1)) * h, 9)
    return b"\x89PNG\r\n\x1a\n" + ihdr(1, 1) + ihdr(w, h) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_a_small_png_whose_header_lies_is_not_decoded_on_the_event_loop(runs, serve):
    """Before: the first IHDR routed it to the loop, Pillow decoded the last (16 MP, 345 ms each): /ping took up to
    710 ms under 4 attacking connections. The gate refuses a PNG with two IHDR headers (400, unopened)."""
    from job.serve.images import LOOP_BYTES

    evil = _png_two_ihdr()
    assert len(evil) <= LOOP_BYTES
    server = serve(str(runs["fast"]))
    status, body, _ = server.request("POST", "/invocations", evil, {"Content-Type": "image/png"})
    assert status == 400 and b"exactly one IHDR" in body, body
    stop, worst = threading.Event(), []

    def attack():
        while not stop.is_set():
            server.request("POST", "/invocations", evil, {"Content-Type": "image/png"})

    threads = [threading.Thread(target=attack) for _ in range(4)]
    [t.start() for t in threads]
    try:
        time.sleep(0.5)
        for _ in range(10):
            t0 = time.perf_counter()
            server.request("GET", "/ping")
            worst.append(time.perf_counter() - t0)
    finally:
        stop.set()
        [t.join() for t in threads]
    assert max(worst) < 0.2, f"liveness answered in up to {max(worst):.2f} s while 15 KB PNGs were decoded"


def test_an_image_decoded_on_the_event_loop_is_bounded_by_the_loop_pixels():
    """Whatever routed it there, an image decoded on the loop is bounded by LOOP_PIXELS as the decoder reads its
    size: a larger one raises NotForTheLoop (the app decodes it in the pool) before a pixel is decoded."""
    import io

    from job.serve.images import NotForTheLoop, decode_image, parse_on_loop

    def png(size) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(class_image(1, np.random.default_rng(0), size=size)).save(buffer, "PNG")
        return buffer.getvalue()

    assert parse_on_loop(lambda b: decode_image(b, "x"), png((64, 64))).shape == (32, 32, 3)
    with pytest.raises(NotForTheLoop):
        parse_on_loop(lambda b: decode_image(b, "x"), png((65, 64)))
    assert decode_image(png((65, 64)), "x").shape == (32, 32, 3)  # in the pool: the server's own bound


def test_metrics_labels_stay_a_fixed_set_whatever_the_paths(runs, serve):
    import random
    import string

    server = serve(str(runs["fast"]))
    server.request("GET", "/v2/models/cifar10/nothing-here")
    server.request("GET", "/metrics")  # its own series exist from here on
    size = len(server.request("GET", "/metrics")[1])
    rng = random.Random(5)
    for i in range(300):
        tail = "".join(rng.choices(string.ascii_letters, k=2000))
        path = f"/v2/models/cifar10/{tail}" if i % 2 else f"/v2/models/cifar10/versions/v/{tail}/infer"
        assert server.request("GET", path)[0] == 404
    status, raw, _ = server.request("GET", "/metrics")
    assert status == 200 and len(raw) < size + 200, (size, len(raw))  # the counts grow, the labels do not
    assert b'route="/v2/models/{name}/{other}",status="404"} 301.0' in raw


def test_a_header_count_that_is_not_ascii_digits_is_a_400(runs, serve):
    server = serve(str(runs["fast"]))
    head = json.dumps(v2_doc(np.zeros((1, 32, 32, 3), np.uint8))).encode()
    values = ["\u00b9", "9" * 5000, "-1", "+5", "5 5", "1_0", "0x10", "99999"]
    for value in values:  # a Unicode digit, 5000 digits, signs, a space, underscores, hex, beyond the body
        status, raw, _ = server.request(
            "POST",
            "/v2/models/cifar10/infer",
            head,
            {"Inference-Header-Content-Length": value, "Content-Type": "application/json"},
        )
        assert status == 400 and set(json.loads(raw)) == {"error"}, (value[:20], raw)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the log line is written just after the answer
        rejected = [e for e in server.events() if e["event"] == "rejected" and e["status"] == 400]
        if len(rejected) == len(values):
            break
        time.sleep(0.05)
    assert len(rejected) == len(values) and all("Inference-Header-Content-Length" in e["reason"] for e in rejected)
    assert "Traceback" not in server.err.read_text()
    assert server.json("POST", "/v2/models/cifar10/infer", v2_doc(np.zeros((1, 32, 32, 3), np.uint8)))[0] == 200


@pytest.mark.parametrize("port", ["\u00b9", "\u0663", "9" * 5000, "80 "])
def test_an_aip_http_port_that_is_not_ascii_digits_exits_2(runs, port):
    proc = run_job("serve", str(runs["fast"]), env={"AIP_HTTP_PORT": port}, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "AIP_HTTP_PORT" in proc.stderr and "Traceback" not in proc.stderr


def test_a_request_cut_at_the_end_of_the_grace_period_is_not_logged_as_drained(runs, serve):
    server = serve(str(runs["fast"]), "--grace-s", "1")
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n")
        s.sendall(b"\x89PNG")  # and the other 996 bytes never come
        time.sleep(0.3)
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0
        answer = s.recv(200)
    stopped = server.events()[-1]
    assert stopped["event"] == "serve_stopped", stopped
    assert stopped["drained"] is False and stopped["unanswered"] == 1, (stopped, answer)
    assert any(e["event"] == "unanswered" and e["route"] == "/invocations" for e in server.events())

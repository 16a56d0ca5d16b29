"""The model server under load: closed-loop clients at concurrency 1, 8 and 64, each sending one real JPEG per
request, against raw ONNX Runtime at batch 64 on the same cores, measured alternately in the same run.

    python -m bench.serve MODEL [--seconds 8] [--rounds 3] [--protocol sagemaker|v2|v2-binary] [--out FILE.json]
        [--server-args '--max-wait-ms 1']

MODEL is anything `job serve` takes (a run folder, a store, a model.onnx). Each round measures raw ONNX Runtime
(batch 64; the better of the server's session settings and one thread) before and after the server at each
concurrency, and divides by the mean of the two; the figures are the medians over the rounds, so both sides see
the same background load. The load generator is asyncio with pre-built requests on
keep-alive connections: it runs on the same cores as the server (stated in the results), which costs the server
CPU the raw figure does not pay. Writes the JSON (default bench/results/<date>-<machine>-serve.json) and a
latency plot beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
CONCURRENCY = (1, 8, 64)
CIFAR_JPEGS = ROOT.parent / "shared" / "data" / "cifar10-jpeg-train.tar.gz"


# ----------------------------------------------------------------------------- inputs


def sample_jpegs(count: int = 64) -> list[bytes]:
    """Real 32x32 JPEGs: CIFAR-10's own where the data archive is here, else synthetic ones saved as JPEG."""
    if CIFAR_JPEGS.is_file():
        out = []
        with tarfile.open(CIFAR_JPEGS, "r:gz") as tar:
            for member in tar:
                if member.isfile() and member.name.endswith(".jpg"):
                    out.append(tar.extractfile(member).read())
                    if len(out) == count:
                        return out
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def build_requests(protocol: str, jpegs: list[bytes], port: int) -> list[bytes]:
    """Whole HTTP/1.1 requests, built once: the client's per-request cost is a write and a read."""
    from job.gates.images import model_input

    out = []
    for blob in jpegs:
        if protocol == "sagemaker":
            path, kind, body, extra = "/invocations", "image/jpeg", blob, ""
        else:
            pixels = model_input(blob)[0]
            tensor = {"name": "image", "datatype": "UINT8", "shape": [1, 32, 32, 3]}
            if protocol == "v2-binary":
                head = json.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": 3072}}]}).encode()
                path, kind, body = "/v2/models/cifar10/infer", "application/octet-stream", head + pixels.tobytes()
                extra = f"Inference-Header-Content-Length: {len(head)}\r\n"
            else:
                body = json.dumps({"inputs": [{**tensor, "data": pixels.ravel().tolist()}]}).encode()
                path, kind, extra = "/v2/models/cifar10/infer", "application/json", ""
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {kind}\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n"
        )
        out.append(head.encode() + body)
    return out


# ----------------------------------------------------------------------------- the load generator


async def _client(port: int, requests: list[bytes], offset: int, deadline: float, latencies: list, errors: list):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = offset
    try:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            writer.write(requests[i % len(requests)])
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            if head[9:12] != b"200":
                errors.append(int(head[9:12]))
            else:
                latencies.append(time.perf_counter() - started)
            i += 1
    finally:
        writer.close()


def process_cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a process, all threads (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def closed_loop(port: int, requests: list[bytes], concurrency: int, seconds: float, server_pid: int) -> dict:
    """The closed loop, with the CPU time it cost: the server's (all its threads) and this client's, per request
    (CPU time is what a loaded machine cannot distort: requests/s depends on what else runs)."""
    latencies: list[float] = []
    errors: list[int] = []
    server_cpu, client_cpu = process_cpu_seconds(server_pid), time.process_time()

    async def main():
        deadline = time.perf_counter() + seconds
        await asyncio.gather(*(_client(port, requests, c, deadline, latencies, errors) for c in range(concurrency)))

    started = time.perf_counter()
    asyncio.run(main())
    elapsed = time.perf_counter() - started
    server_cpu = process_cpu_seconds(server_pid) - server_cpu
    client_cpu = time.process_time() - client_cpu
    ordered = sorted(latencies)

    def pct(q):
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3) if ordered else None

    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": len(errors),
        "requests_per_second": round(len(latencies) / elapsed, 1),
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "server_cpu_us_per_request": round(server_cpu / max(1, len(latencies)) * 1e6, 1),
        "client_cpu_us_per_request": round(client_cpu / max(1, len(latencies)) * 1e6, 1),
    }


# ----------------------------------------------------------------------------- raw ONNX Runtime


def raw_sessions(model_path: Path, threads: int) -> dict:
    """ONNX Runtime as the server runs it (its threads, no spinning) and single-threaded: the raw figure is the
    better of the two, so the ratio is never flattered by a weak baseline."""
    from job.runtime.ort import ort_session

    return {"server_settings": ort_session(model_path, threads, spin=False), "one_thread": ort_session(model_path, 1)}


def raw_ort(sessions: dict, jpegs: list[bytes], seconds: float, batch: int = 64) -> dict:
    """images/s of ONNX Runtime alone at `batch` on decoded pixels, per session configuration."""
    import numpy as np

    from job.gates.images import model_input

    x = np.stack([model_input(jpegs[i % len(jpegs)])[0] for i in range(batch)])
    out = {}
    for name, session in sessions.items():
        session.run(None, {"image": x})
        runs, started, cpu = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - started < seconds / len(sessions):
            session.run(None, {"image": x})
            runs += 1
        out[name] = round(runs * batch / (time.perf_counter() - started), 1)
        out[f"{name}_cpu_us_per_image"] = round((time.process_time() - cpu) / (runs * batch) * 1e6, 1)
    out["best"] = max(out[name] for name in sessions)
    return out


# ----------------------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int, extra: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "job", "serve", model, "--host", "127.0.0.1", "--port", str(port), *extra],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,  # one line per batch: not wanted here
        stderr=subprocess.PIPE,
        text=True,
    )
    import http.client

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited: {proc.stderr.read()[-2000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/v2/health/ready")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("the server never became ready")


def model_file(model: str, into: Path) -> Path:
    """The model.onnx the server will load, through the same verified path."""
    from job.predict import resolve_model

    return resolve_model(model, into)


def run(model: str, seconds: float, rounds: int, protocol: str, server_args: list[str]) -> dict:
    """Per round: raw, c=1, raw, c=8, raw, c=64, raw. Each server figure is divided by the mean of the raw
    figures measured just before and just after it; the medians over the rounds are reported."""
    import tempfile

    from job.runtime.resources import available_cpus

    jpegs = sample_jpegs()
    threads = available_cpus()
    port = free_port()
    requests = build_requests(protocol, jpegs, port)
    server = start_server(model, port, ["--threads", str(threads), *server_args])
    raws, by_c = [], {c: [] for c in CONCURRENCY}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            sessions = raw_sessions(model_file(model, Path(tmp)), threads)
            for r in range(rounds):
                raws.append(raw_ort(sessions, jpegs, seconds / 2))
                for c in CONCURRENCY:
                    measured = closed_loop(port, requests, c, seconds, server.pid)
                    raws.append(raw_ort(sessions, jpegs, seconds / 2))
                    around = (raws[-2]["best"] + raws[-1]["best"]) / 2
                    measured["raw_ort_batch64_around"] = around
                    measured["ratio_to_raw"] = round(measured["requests_per_second"] / around, 3)
                    by_c[c].append(measured)
                    print(f"[bench.serve] round {r + 1}: c={c}: {measured}", flush=True)
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(60)
    rows = []
    for c, runs in by_c.items():
        row = {"concurrency": c}
        keys = ("requests_per_second", "p50_ms", "p90_ms", "p99_ms", "ratio_to_raw")
        for key in (*keys, "server_cpu_us_per_request", "client_cpu_us_per_request"):
            row[key] = statistics.median(run[key] for run in runs)
        row["errors"] = sum(run["errors"] for run in runs)
        row["rounds"] = runs
        rows.append(row)
    return {
        "protocol": protocol,
        "seconds_per_measure": seconds,
        "rounds": rounds,
        "threads": threads,
        "server_args": server_args,
        "raw_ort_batch64_images_per_second": statistics.median(r["best"] for r in raws),
        "raw_ort_cpu_us_per_image": statistics.median(
            min(r[f"{n}_cpu_us_per_image"] for n in ("server_settings", "one_thread")) for r in raws
        ),
        "raw_ort": raws,
        "server": rows,
        "server_exit_code": code,
        "load_generator": "asyncio, keep-alive, on the same cores as the server",
    }


def plot_latency(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["server"]
    cs = [r["concurrency"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for key in ("p50_ms", "p90_ms", "p99_ms"):
        left.plot(cs, [r[key] for r in rows], marker="o", label=key.replace("_ms", ""))
    left.set(xscale="log", yscale="log", xlabel="concurrent clients", ylabel="latency (ms)", title="latency")
    left.set_xticks(cs, [str(c) for c in cs])
    left.legend()
    right.bar([str(c) for c in cs], [r["requests_per_second"] for r in rows], label="server, requests/s")
    raw = result["raw_ort_batch64_images_per_second"]
    right.axhline(raw, color="k", ls="--", label="raw ONNX Runtime, batch 64")
    right.axhline(0.7 * raw, color="r", ls=":", label="70% of raw")
    right.set(xlabel="concurrent clients", ylabel="images/s", title=f"throughput ({result['protocol']})")
    right.legend(fontsize=8)
    fig.suptitle(result.get("machine", {}).get("cpu_model", ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="what `job serve` takes: a run folder, a store or a model.onnx")
    p.add_argument("--seconds", type=float, default=8.0, help="seconds per measurement (default 8)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds; the medians are reported (default 3)")
    p.add_argument("--protocol", choices=("sagemaker", "v2", "v2-binary"), default="sagemaker")
    p.add_argument("--out", type=Path, help="results JSON (default bench/results/<date>-<machine>-serve.json)")
    p.add_argument("--server-args", default="", help="extra `job serve` flags, one string: '--max-wait-ms 1'")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from bench.run import machine

    extra = shlex.split(args.server_args)
    result = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine()}
    result.update(run(args.model, args.seconds, args.rounds, args.protocol, extra))
    out = args.out or RESULTS / f"{time.strftime('%Y-%m-%d')}-{result['machine']['tag']}-serve.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    plot_latency(result, out.with_suffix(".png"))
    for row in result["server"]:
        print(
            f"c={row['concurrency']:>3}: {row['requests_per_second']:>8.1f} req/s  p50 {row['p50_ms']} ms  "
            f"p99 {row['p99_ms']} ms  {row['ratio_to_raw']:.0%} of raw ORT batch 64 "
            f"(median {result['raw_ort_batch64_images_per_second']} img/s); CPU per request: server "
            f"{row['server_cpu_us_per_request']} us, client {row['client_cpu_us_per_request']} us "
            f"(raw ORT {result['raw_ort_cpu_us_per_image']} us per image)"
        )
    print(f"wrote {out} and {out.with_suffix('.png').name}")


if __name__ == "__main__":
    main()

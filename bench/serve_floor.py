"""The floor under any per-request Python server on these cores: uvicorn (the same settings as `job serve`) with
an ASGI app that reads the body and answers a fixed 60-byte JSON, no model, no parsing, under the same closed-loop
load generator as bench.serve. Its server CPU per request is what the HTTP layer and asyncio alone cost; with the
image gate's decode and ONNX Runtime's per-image CPU it bounds the ratio to raw ONNX Runtime that a server of
single-image requests can reach (docs/serving.md#the-bound):

    ratio <= ort_us / (floor_us + decode_us + ort_us + client_us)      (server and clients on the same cores)

    python -m bench.serve_floor [--seconds 6] [--rounds 3] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FIXED = b'{"predictions":[{"label":"cat","probabilities":[0.1,0.9]}]}'
APP = f"""
import uvicorn
BODY = {FIXED!r}
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({{"type": "http.response.start", "status": 200, "headers": HEADERS}})
    await send({{"type": "http.response.body", "body": BODY}})

uvicorn.run(app, host="127.0.0.1", port=int(__import__("sys").argv[1]), lifespan="off", access_log=False,
            log_level="warning", server_header=False, timeout_keep_alive=5)
"""


def decode_us(jpegs: list[bytes], n: int = 2000) -> float:
    """CPU per image of the image gate on these JPEGs, as the server calls it (one thread)."""
    from job.gates.images import SERVE_MAX_PIXELS, model_input

    started = time.process_time()
    for i in range(n):
        model_input(jpegs[i % len(jpegs)], "the image", max_pixels=SERVE_MAX_PIXELS)
    return round((time.process_time() - started) / n * 1e6, 1)


def measure(seconds: float, rounds: int, concurrency: int = 64) -> dict:
    import http.client

    from bench.serve import build_requests, closed_loop, free_port, sample_jpegs

    jpegs, port = sample_jpegs(), free_port()
    proc = subprocess.Popen([sys.executable, "-c", APP, str(port)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("POST", "/", b"x")
                conn.getresponse().read()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("the floor server did not start") from None
                time.sleep(0.1)
        requests = build_requests("sagemaker", jpegs, port)
        runs = [closed_loop(port, requests, concurrency, seconds, proc.pid) for _ in range(rounds)]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    return {
        "concurrency": concurrency,
        "rounds": runs,
        "server_cpu_us_per_request": statistics.median(r["server_cpu_us_per_request"] for r in runs),
        "client_cpu_us_per_request": statistics.median(r["client_cpu_us_per_request"] for r in runs),
        "requests_per_second": statistics.median(r["requests_per_second"] for r in runs),
        "image_gate_decode_us_per_image": decode_us(jpegs),
        "httptools": _has("httptools"),
        "load_average": os.getloadavg(),
    }


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    result = measure(args.seconds, args.rounds)
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()

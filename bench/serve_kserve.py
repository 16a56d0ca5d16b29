"""`job serve` against KServe's Python ModelServer, same model, same load generator (bench/serve.py), v2 JSON
single-image requests, alternating; for docs/serving.md's choice of HTTP layer. KServe lives in its own venv:

    python3.11 -m venv /tmp/kserve-venv && /tmp/kserve-venv/bin/pip install kserve==0.21.0 onnxruntime pillow
    python -m bench.serve_kserve RUN_FOLDER --kserve-python /tmp/kserve-venv/bin/python [--rounds 2]

The same file is the KServe server (`--as-kserve-server MODEL.onnx PORT THREADS`, run by the KServe venv).
"""

import argparse
import http.client
import json
import signal
import subprocess
import sys
import time
from pathlib import Path


def kserve_server(path: str, port: int, threads: int) -> None:
    import numpy as np
    import onnxruntime as ort
    from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer

    class Cifar(Model):
        def __init__(self):
            super().__init__("cifar10")
            options = ort.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self.session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
            self.ready = True

        def predict(self, payload: InferRequest, headers=None, response_headers=None):
            probs = self.session.run(["probabilities"], {"image": payload.inputs[0].as_numpy().astype(np.uint8)})[0]
            out = InferOutput(name="probabilities", shape=list(probs.shape), datatype="FP32")
            out.set_data_from_numpy(probs, binary_data=False)
            return InferResponse(model_name=self.name, infer_outputs=[out], response_id=payload.id or "0")

    ModelServer(http_port=port, grpc_port=port + 1, workers=1, enable_grpc=False).start([Cifar()])


def _wait_ready(port: int, proc, path: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < 120:
        if proc.poll() is not None:
            raise SystemExit("the KServe server exited")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("the KServe server never became ready")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", nargs="?")
    p.add_argument("--kserve-python", default="/tmp/kserve-venv/bin/python")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--out", type=Path, default=Path("bench/results/serve-vs-kserve.json"))
    p.add_argument("--as-kserve-server", nargs=3, metavar=("MODEL", "PORT", "THREADS"))
    args = p.parse_args(argv)
    if args.as_kserve_server:
        path, port, threads = args.as_kserve_server
        return kserve_server(path, int(port), int(threads))
    from bench.serve import build_requests, closed_loop, free_port, sample_jpegs, start_server

    jpegs, kport, jport = sample_jpegs(), free_port(), free_port()
    model_file = str(Path(args.model) / "model.onnx") if Path(args.model).is_dir() else args.model
    kproc = subprocess.Popen(
        [args.kserve_python, __file__, "--as-kserve-server", model_file, str(kport), "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    out = {"ready_seconds": {"kserve": round(_wait_ready(kport, kproc, "/v2/models/cifar10/ready"), 2)}, "rows": []}
    started = time.monotonic()
    jproc = start_server(args.model, jport, ["--threads", "2"])
    out["ready_seconds"]["job_serve"] = round(time.monotonic() - started, 2)
    try:
        for r in range(args.rounds):
            for c in (1, 8, 64):
                for name, port, proc in (("job_serve", jport, jproc), ("kserve", kport, kproc)):
                    row = closed_loop(port, build_requests("v2", jpegs, port), c, args.seconds, proc.pid)
                    out["rows"].append({"server": name, "round": r, **row})
                    print(json.dumps(out["rows"][-1]), flush=True)
    finally:
        for proc in (jproc, kproc):
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    return None


if __name__ == "__main__":
    sys.exit(main())

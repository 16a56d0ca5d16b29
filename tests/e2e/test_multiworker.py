"""Two worker processes on 127.0.0.1 with TF_CONFIG: synchronous training, exactly one published run."""

import json
import os
import subprocess
import sys

from helpers import ROOT
from s3_server import free_port


def test_two_workers_train_together_and_only_the_chief_publishes(tiny_tar, tmp_path):
    ports = [free_port(), free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    out = tmp_path / "store"
    procs = []
    for index in range(2):
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOB_")}
        env.update(
            PYTHONPATH=str(ROOT),
            TF_CPP_MIN_LOG_LEVEL="2",
            JOB_THREADS="1",
            TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
        )
        args = [
            "train",
            "--data",
            str(tiny_tar),
            "--out",
            str(out),
            "--run-id",
            "mw-1",
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--cache-dir",
            str(tmp_path / f"cache{index}"),
        ]
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "job", *args],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = [p.communicate(timeout=300) for p in procs]
    for p, (_, stderr) in zip(procs, results, strict=True):
        assert p.returncode == 0, stderr[-3000:]
        assert "2 replicas in sync" in stderr
    chief, worker = (json.loads(r[0].strip().splitlines()[-1]) for r in results)
    assert chief["event"] == "run_complete" and chief["run_id"] == "mw-1"
    assert worker == {**worker, "role": "worker", "published": False}
    assert sorted(p.name for p in out.iterdir()) == ["latest.json", "mw-1"]
    metrics = json.loads((out / "mw-1" / "metrics.json").read_text())
    assert metrics["parity"]["onnxruntime"]["argmax_mismatches"] == 0

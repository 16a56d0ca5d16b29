"""Two worker processes on 127.0.0.1 with TF_CONFIG: synchronous training, exactly one published run."""

import json

from helpers import start_job, train_args
from s3_server import free_port


def test_two_workers_train_together_and_only_the_chief_publishes(tiny_tar, tmp_path):
    ports = [free_port(), free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    out = tmp_path / "store"
    procs = []
    for index in range(2):
        env = {
            "JOB_THREADS": "1",
            "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
        }
        args = train_args(tiny_tar, out, run_id="mw-1", cache=tmp_path / f"cache{index}", batch_size=16)
        procs.append(start_job(*args, env=env))
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

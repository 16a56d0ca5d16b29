"""Two worker processes on 127.0.0.1 with TF_CONFIG: synchronous training, exactly one published run."""

import json

import k8s_manifests as k8s
import pytest

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
        procs.append(start_job(*args, "--log-dir", str(tmp_path / f"tb{index}"), env=env))
    results = [p.communicate(timeout=300) for p in procs]
    for p, (_, stderr) in zip(procs, results, strict=True):
        assert p.returncode == 0, stderr[-3000:]
        assert "2 replicas in sync" in stderr
    chief, worker = (json.loads(r[0].strip().splitlines()[-1]) for r in results)
    assert chief["event"] == "run_complete" and chief["run_id"] == "mw-1"
    assert worker == {**worker, "role": "worker", "published": False}
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["latest.json", "mw-1"]
    metrics = json.loads((out / "mw-1" / "metrics.json").read_text())
    assert metrics["parity"]["onnxruntime"]["argmax_mismatches"] == 0
    for split in ("train", "validation"):  # TensorBoard from the chief, laid out as Keras' callback does
        assert list((tmp_path / "tb0" / split).glob("events.out.tfevents.*"))
    assert not (tmp_path / "tb1").exists()


def test_a_preempted_worker_stops_the_cluster_and_the_restart_resumes_with_no_step_repeated(tmp_path):
    """Two workers, a shared checkpoint dir; SIGTERM to worker 1 during epoch 2: both save the same checkpoint
    and exit 143; started again, they resume and train exactly the steps an uninterrupted run trains."""
    import signal

    from helpers import make_image_tree, make_tar, wait_for_event

    # 12 steps an epoch (each a gRPC all-reduce): the signal after epoch 1 still has 24 steps to land in
    data = make_tar(make_image_tree(tmp_path / "tree", per_class=24, seed=5), tmp_path / "data.tar")
    epochs, batch = 3, 16
    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}

    def start_cluster():
        procs = []
        for index in range(2):
            env = {
                "JOB_THREADS": "1",
                "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
            }
            args = train_args(
                data,
                tmp_path / "store",
                run_id="mw-resume",
                cache=tmp_path / f"cache{index}",
                epochs=epochs,
                batch_size=batch,
                checkpoint_dir=tmp_path / "ckpt",
            )
            procs.append(start_job(*args, env=env))
        return procs

    first = start_cluster()
    wait_for_event(first[1], "epoch")  # worker 1 finished epoch 1
    first[1].send_signal(signal.SIGTERM)
    stopped = [p.communicate(timeout=300) for p in first]
    assert [p.returncode for p in first] == [143, 143], stopped[0][1][-3000:] + stopped[1][1][-3000:]
    assert not (tmp_path / "store" / "mw-resume").exists()

    second = start_cluster()
    results = [p.communicate(timeout=300) for p in second]
    assert [p.returncode for p in second] == [0, 0], results[0][1][-3000:] + results[1][1][-3000:]
    assert "resuming run mw-resume" in results[0][1] and "resuming run mw-resume" in results[1][1]
    metrics = json.loads((tmp_path / "store" / "mw-resume" / "metrics.json").read_text())
    per_epoch = -(-metrics["data"]["sizes"]["train"] // batch)
    resumed = metrics["training"]["resumed_from"]
    print(
        f"preempted at epoch {resumed['epoch']} step {resumed['step']} of {per_epoch}; "
        f"optimizer steps {metrics['training']['optimizer_steps']} = {epochs} x {per_epoch}"
    )
    assert 0 < resumed["epoch"] * per_epoch + resumed["step"] < epochs * per_epoch
    assert metrics["training"]["optimizer_steps"] == epochs * per_epoch
    history = (tmp_path / "store" / "mw-resume" / "history.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in history[1:]] == ["1", "2", "3"]


@pytest.mark.parametrize("kind", ["indexed", "jobset", "trainjob"])
def test_two_pods_of_each_manifest_derive_their_cluster_train_once_and_publish_once(kind, tiny_tar, tmp_path):
    """The environment each manifest gives its pods (tests/k8s_manifests.py), no TF_CONFIG; on one host the
    derived DNS names are replaced by 127.0.0.1 ports (CLUSTER_ADDRESS_OVERRIDE)."""
    addresses = ",".join(f"127.0.0.1:{free_port()}" for _ in range(2))
    out, procs, dry_runs = tmp_path / "store", [], []
    for index, pod in enumerate(k8s.pods(kind)):
        env = {**pod, "CLUSTER_ADDRESS_OVERRIDE": addresses, "JOB_THREADS": "1"}
        args = [a for a in train_args(tiny_tar, out, cache=tmp_path / f"cache{index}", batch_size=16)]
        # the dry run reads and writes nothing the pods use: it runs while they import TensorFlow
        dry_runs.append(start_job(*args, "--dry-run", env=env))
        procs.append(start_job(*args, env=env))
    plans = []
    for plan in dry_runs:
        stdout, stderr = plan.communicate(timeout=300)
        assert plan.returncode == 0, stderr[-2000:]
        plans.append(json.loads(stdout.splitlines()[-1])["cluster"])
    results = [p.communicate(timeout=300) for p in procs]
    print(f"{kind}: dry-run clusters {plans}")
    assert [p["chief"] for p in plans] == [True, False] and plans[0]["workers"] == plans[1]["workers"]
    assert [p["task"] for p in plans] == ["worker 0", "worker 1"]
    for p, (_, stderr) in zip(procs, results, strict=True):
        assert p.returncode == 0, stderr[-3000:]
        assert "2 replicas in sync" in stderr
    chief, worker = (json.loads(r[0].strip().splitlines()[-1]) for r in results)
    run_id = pod["JOB_RUN_ID"]  # the JobSet / Job name: stable across the platform's restarts
    assert chief["event"] == "run_complete" and chief["run_id"] == run_id and worker["published"] is False
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted(["latest.json", run_id])

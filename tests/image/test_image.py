"""The container image, built by `make test-image` (infra/image/build.sh), run with a real OCI runtime
(`podman run`) under what clusters impose: read-only root, a /tmp tmpfs, uid 10001, 2 CPUs, 4 GiB, no network
for the folder case. `podman stop` during training must end in 143 within the grace period, and a second
container with the same run id must resume.

Where the default runtime (crun) is refused its setrlimit calls, the runs use infra/image/containers.conf (runc);
see infra/image/podman-env.sh.
"""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from helpers import ROOT, make_image_tree, make_tar
from job.storage.runs import local_manifest_problems as verify_manifest

IMAGE = os.environ.get("IMAGE", "localhost/cifar10-job:latest")
LIMITS = ["--read-only", "--tmpfs", "/tmp:rw,size=1g", "--user", "10001:10001", "--cpus", "2", "--memory", "4g"]
GRACE = 30  # Kubernetes' default terminationGracePeriodSeconds


def inspect(fmt: str) -> str:
    return subprocess.run(
        ["podman", "image", "inspect", IMAGE, "--format", fmt], capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture(scope="module")
def podman_env():
    """The environment `podman run` needs here: as is, or with the runc containers.conf."""
    if not shutil.which("podman") or subprocess.run(["podman", "image", "exists", IMAGE]).returncode != 0:
        pytest.fail(f"image {IMAGE} not built: run `make test-image` (it builds it first)")
    proc = subprocess.run([str(ROOT / "infra" / "image" / "podman-env.sh"), IMAGE], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    env = dict(os.environ)
    if proc.stdout.strip():
        env["CONTAINERS_CONF"] = proc.stdout.strip()
    print(f"podman runtime: {'runc via ' + proc.stdout.strip() if proc.stdout.strip() else 'default'}")
    return env


def podman_run(podman_env, args, *, name=None, mounts=(), env=None, network="none", detach=False, timeout=600):
    cmd = ["podman", "run", *LIMITS, f"--network={network}"]
    cmd += ["--name", name] if name else ["--rm"]
    cmd += ["-d"] if detach else []
    for host, target in mounts:
        cmd += ["-v", f"{host}:{target}"]
    for key, value in (env or {}).items():
        cmd += ["--env", f"{key}={value}"]
    return subprocess.run([*cmd, IMAGE, *args], capture_output=True, text=True, env=podman_env, timeout=timeout)


def owned_by_the_job(*folders: Path) -> None:
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        os.chown(folder, 10001, 10001)  # files the container's uid writes into a bind mount


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("image-data")
    (base / "data").mkdir()
    make_tar(make_image_tree(base / "tree", per_class=40, seed=2), base / "data" / "cifar.tar.gz")
    return base / "data"


def test_image_config_matches_the_dockerfile():
    assert json.loads(inspect("{{json .Config.Entrypoint}}")) == ["python", "-m", "job"]
    assert json.loads(inspect("{{json .Config.Cmd}}")) == ["train"]
    assert inspect("{{.Config.User}}") == "10001:10001"
    labels = json.loads(inspect("{{json .Config.Labels}}"))
    assert labels["org.opencontainers.image.title"] == "cifar10-job"
    from job import __version__

    assert labels["org.opencontainers.image.version"] == __version__
    env = "\n".join(json.loads(inspect("{{json .Config.Env}}")))
    assert "PYTHONUNBUFFERED=1" in env and "AWS_SECRET" not in env
    print(f"image size: {int(inspect('{{.Size}}')) / 1e6:.0f} MB")


def test_a_job_in_the_image_publishes_to_a_mounted_folder_without_network(podman_env, data, tmp_path):
    out = tmp_path / "artifacts"
    owned_by_the_job(out)
    started = time.monotonic()
    proc = podman_run(
        podman_env,
        ["train", "--data", "/data/cifar.tar.gz", "--out", "/artifacts", "--run-id", "img-1", "--epochs", "1"],
        mounts=[(data, "/data:ro"), (out, "/artifacts")],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert verify_manifest(out / "img-1") == []
    assert (out / "img-1").stat().st_uid == 10001  # written as the non-root user
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [e["event"] for e in events][0] == "run_started" and events[-1]["event"] == "run_complete"
    metrics = json.loads((out / "img-1" / "metrics.json").read_text())
    assert metrics["threads"]["intra_op"] == 2  # --cpus 2 is the cgroup quota the job sizes itself by
    print(
        f"container run: {time.monotonic() - started:.1f}s, peak RSS {metrics['peak_rss_mb']:.0f} MiB "
        f"(under --memory 4g)"
    )


def test_a_job_in_the_image_publishes_to_s3(podman_env, data, bucket, s3_env):
    from job.storage.s3client import make_client

    proc = podman_run(
        podman_env,
        [
            "train",
            "--data",
            "/data/cifar.tar.gz",
            "--out",
            f"s3://{bucket}/runs",
            "--run-id",
            "img-s3",
            "--epochs",
            "1",
        ],
        mounts=[(data, "/data:ro")],
        env=s3_env,
        network="host",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    keys = [o["Key"] for o in make_client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert "runs/img-s3/manifest.json" in keys and "runs/latest.json" in keys
    assert s3_env["AWS_SECRET_ACCESS_KEY"] not in proc.stderr + proc.stdout


def test_podman_stop_during_training_gives_143_and_a_second_container_resumes(podman_env, data, tmp_path):
    out, ckpt = tmp_path / "artifacts", tmp_path / "checkpoints"
    owned_by_the_job(out, ckpt)
    args = [
        "train",
        "--data",
        "/data/cifar.tar.gz",
        "--out",
        "/artifacts",
        "--checkpoint-dir",
        "/checkpoints",
        "--run-id",
        "img-stop",
        "--epochs",
        "4",
        "--batch-size",
        "8",
    ]
    mounts = [(data, "/data:ro"), (out, "/artifacts"), (ckpt, "/checkpoints")]
    name = f"cifar-stop-{os.getpid()}"
    started = podman_run(podman_env, args, name=name, mounts=mounts, detach=True)
    assert started.returncode == 0, started.stderr
    try:
        logs = subprocess.Popen(
            ["podman", "logs", "-f", name], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=podman_env
        )
        for line in logs.stdout:  # the events on the container's stdout
            if json.loads(line)["event"] == "epoch":
                break
        logs.kill()
        t0 = time.monotonic()
        stop = subprocess.run(
            ["podman", "stop", "--time", str(GRACE), name],
            capture_output=True,
            text=True,
            env=podman_env,
            timeout=GRACE + 30,
        )
        seconds = time.monotonic() - t0
        assert stop.returncode == 0, stop.stderr
        code = int(
            subprocess.run(
                ["podman", "inspect", name, "--format", "{{.State.ExitCode}}"],
                capture_output=True,
                text=True,
                env=podman_env,
                check=True,
            ).stdout
        )
        stderr = subprocess.run(["podman", "logs", name], capture_output=True, text=True, env=podman_env).stderr
    finally:
        subprocess.run(["podman", "rm", "-f", name], capture_output=True, env=podman_env)
    print(f"podman stop --time {GRACE}: exit {code} after {seconds:.1f}s")
    assert code == 143, stderr[-3000:]  # not 137: the checkpoint was saved inside the grace period
    assert seconds < GRACE
    state = json.loads((ckpt / "img-stop" / "state.json").read_text())
    assert not (out / "img-stop").exists()

    resumed = podman_run(podman_env, args, mounts=mounts)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming run img-stop" in resumed.stderr
    metrics = json.loads((out / "img-stop" / "metrics.json").read_text())
    assert metrics["training"]["resumed_from"]["epoch"] == state["epoch"]
    assert metrics["training"]["optimizer_steps"] == 4 * -(-metrics["data"]["sizes"]["train"] // 8)


def test_bad_input_in_the_image_keeps_its_exit_code(podman_env):
    proc = podman_run(podman_env, ["train", "--data", "/nonexistent.tar.gz", "--out", "/tmp/o"])
    assert proc.returncode == 3 and "error: data error" in proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["event"] == "run_failed"

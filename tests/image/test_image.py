"""The container image, built by `make test-image` (infra/image/build.sh): run the job inside it as its
non-root user on tiny data, publishing to a mounted folder and to the S3 server on the host.

Runs with `buildah run --isolation=chroot` (plain `podman run` is refused by this sandbox's rlimit
policy); the command is composed from the image's own Entrypoint + Cmd, so the real entrypoint is used.
"""

import json
import os
import shutil
import subprocess
import time

import pytest

from job.storage.manifest import verify_manifest

IMAGE = os.environ.get("IMAGE", "localhost/cifar10-job:latest")


def inspect(fmt: str) -> str:
    return subprocess.run(
        ["podman", "inspect", IMAGE, "--format", fmt], capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture(scope="module")
def container():
    if not shutil.which("buildah") or subprocess.run(["podman", "image", "exists", IMAGE]).returncode != 0:
        pytest.fail(f"image {IMAGE} not built: run `make test-image` (builds it first)")
    name = subprocess.run(["buildah", "from", IMAGE], capture_output=True, text=True, check=True).stdout.strip()
    yield name
    subprocess.run(["buildah", "rm", name], capture_output=True)


def run_in_image(container, args, mounts=(), env=None, timeout=600):
    entrypoint = json.loads(inspect("{{json .Config.Entrypoint}}"))
    user = inspect("{{.Config.User}}")
    cmd = ["buildah", "run", "--isolation=chroot", "--network=host", "--user", user]
    for host, target in mounts:
        cmd += ["-v", f"{host}:{target}"]
    for key, value in (env or {}).items():
        cmd += ["--env", f"{key}={value}"]
    return subprocess.run(cmd + [container, "--"] + entrypoint + args, capture_output=True, text=True, timeout=timeout)


def test_image_config_matches_the_dockerfile():
    assert json.loads(inspect("{{json .Config.Entrypoint}}")) == ["python", "-m", "job"]
    assert json.loads(inspect("{{json .Config.Cmd}}")) == ["train"]
    assert inspect("{{.Config.User}}") == "10001:10001"
    labels = json.loads(inspect("{{json .Config.Labels}}"))
    assert labels["org.opencontainers.image.title"] == "cifar10-job" and "org.opencontainers.image.revision" in labels
    env = "\n".join(json.loads(inspect("{{json .Config.Env}}")))
    assert "PYTHONUNBUFFERED=1" in env and "AWS_SECRET" not in env


def _shared(tmp_path, tiny_tar):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(tiny_tar, data / "tiny.tar.gz")
    out = tmp_path / "artifacts"
    out.mkdir()
    for d in (data, out):
        d.chmod(0o777)  # the container's uid 10001 writes here
    return data, out


def test_tiny_job_in_the_image_publishes_to_a_mounted_folder(container, tiny_tar, tmp_path):
    data, out = _shared(tmp_path, tiny_tar)
    started = time.monotonic()
    proc = run_in_image(
        container,
        ["train", "--data", "/data/tiny.tar.gz", "--out", "/artifacts", "--run-id", "img-1", "--epochs", "1"],
        mounts=[(data, "/data"), (out, "/artifacts")],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(f"container run: {time.monotonic() - started:.1f}s")
    assert verify_manifest(out / "img-1") == []
    assert (out / "img-1").stat().st_uid == 10001  # written as the non-root user
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["event"] == "run_complete" and summary["durations_s"]["train"] > 0


def test_tiny_job_in_the_image_publishes_to_s3(container, tiny_tar, tmp_path, bucket, s3_env):
    from job.storage.s3client import make_client

    data, _ = _shared(tmp_path, tiny_tar)
    proc = run_in_image(
        container,
        ["train", "--data", "/data/tiny.tar.gz", "--out", f"s3://{bucket}/runs", "--run-id", "img-s3", "--epochs", "1"],
        mounts=[(data, "/data")],
        env=s3_env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    keys = [o["Key"] for o in make_client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert "runs/img-s3/manifest.json" in keys and "runs/latest.json" in keys
    assert s3_env["AWS_SECRET_ACCESS_KEY"] not in proc.stderr + proc.stdout


def test_bad_input_in_the_image_keeps_its_exit_code(container, tmp_path):
    proc = run_in_image(container, ["train", "--data", "/nonexistent.tar.gz", "--out", "/tmp/o"])
    assert proc.returncode == 3 and "error: data error" in proc.stderr

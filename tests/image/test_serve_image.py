"""The serving image (`make test-image-serve`), run with podman as a cluster would: read-only root, a /tmp tmpfs,
uid 10001, 2 CPUs. No TensorFlow, shell or package manager inside; at most 300 MB; it serves a mounted run folder and
an s3:// store (what the trimmed botocore keeps) with the probabilities `job predict` prints; `podman stop` (SIGTERM)
ends it with 0."""

import json
import os
import shutil
import subprocess
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from helpers import ROOT, class_image, contract_model, run_job
from s3_server import free_port

IMAGE = os.environ.get("IMAGE", "localhost/cifar10-job:serve")
LIMITS = ["--read-only", "--tmpfs", "/tmp:rw,size=256m", "--user", "10001:10001", "--cpus", "2", "--memory", "1g"]


@pytest.fixture(scope="module")
def podman_env():
    if not shutil.which("podman") or subprocess.run(["podman", "image", "exists", IMAGE]).returncode != 0:
        pytest.fail(f"image {IMAGE} not built: run `make test-image-serve` (it builds it first)")
    proc = subprocess.run([str(ROOT / "infra" / "image" / "podman-env.sh"), IMAGE], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    env = dict(os.environ)
    if proc.stdout.strip():
        env["CONTAINERS_CONF"] = proc.stdout.strip()
    return env


def inspect(fmt: str) -> str:
    return subprocess.run(
        ["podman", "image", "inspect", IMAGE, "--format", fmt], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_the_serving_image_is_small_non_root_and_has_no_tensorflow(podman_env):
    size = int(inspect("{{.Size}}"))
    base = inspect('{{index .Config.Labels "org.opencontainers.image.title"}}')
    print(f"serving image size: {size / 1e6:.0f} MB ({base})")
    # The target (docs/container.md): a scratch image holding only the interpreter, the venv and the libraries they
    # link (about 270 MB); a regression such as TensorFlow, a second runtime or the base OS creeping in breaks it.
    assert size <= 300e6
    assert inspect("{{.Config.User}}") == "10001:10001"
    assert json.loads(inspect("{{json .Config.Cmd}}")) == ["serve"]
    probe = (
        "import importlib.util as u, os, shutil;"
        "print([m for m in ('tensorflow', 'keras', 'onnxruntime', 'uvicorn', 'pip', 'setuptools') if u.find_spec(m)],"
        " [t for t in ('sh', 'bash', 'apt-get', 'dpkg', 'perl') if shutil.which(t, path='/usr/bin:/bin:/usr/sbin:/sbin')])"
    )
    proc = subprocess.run(
        ["podman", "run", "--rm", *LIMITS, "--network=none", "--entrypoint", "python", IMAGE, "-c", probe],
        capture_output=True, text=True, env=podman_env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['onnxruntime', 'uvicorn'] []"


def start_server(podman_env, podman_args: list[str], serve_args: list[str]) -> tuple[str, int]:
    """`podman run -d` the image's `serve SERVE_ARGS` on the host network; returns (container name, port) once
    /ping answers 200."""
    port, name = free_port(), f"serve-{os.getpid()}-{free_port()}"
    started = subprocess.run(
        ["podman", "run", "-d", "--name", name, *LIMITS, "--network=host", *podman_args, IMAGE,
         "serve", *serve_args, "--host", "127.0.0.1", "--port", str(port), "--grace-s", "10"],
        capture_output=True, text=True, env=podman_env, timeout=120,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    deadline = time.monotonic() + 60
    while True:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2).status == 200:
                return name, port
        except OSError:
            logs = subprocess.run(["podman", "logs", name], capture_output=True, text=True, env=podman_env)
            failed = [line for line in (logs.stdout + logs.stderr).splitlines() if "model_failed" in line]
            if failed or time.monotonic() > deadline:
                subprocess.run(["podman", "rm", "-f", name], capture_output=True, env=podman_env)
                pytest.fail(f"the server never became ready: {failed or logs.stderr[-2000:]}")
            time.sleep(0.2)


def predicted(port: int, photo) -> list[float]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations", photo.read_bytes(), {"Content-Type": "image/jpeg"}
    )
    (prediction,) = json.loads(urllib.request.urlopen(request, timeout=10).read())["predictions"]
    return prediction["probabilities"]


def model_run(tmp_path):
    """A contract-valid 3-class run folder and a photo, with the probabilities `job predict` gives it."""
    from job.storage.manifest import write_manifest

    run = tmp_path / "run"
    run.mkdir()
    contract_model(run / "model.onnx", classes=3, run_id="img-serve")
    write_manifest(run, "img-serve")
    os.chmod(tmp_path, 0o755)
    photo = tmp_path / "photo.jpg"
    Image.fromarray(class_image(2, np.random.default_rng(1), size=(48, 40))).save(photo)
    expected = json.loads(run_job("predict", str(run), str(photo), "--json").stdout)["probabilities"]
    return run, photo, list(expected.values())


def test_the_serving_image_serves_a_mounted_run_like_predict(podman_env, tmp_path):
    run, photo, expected = model_run(tmp_path)
    name, port = start_server(podman_env, ["-v", f"{run}:/model:ro"], ["/model"])
    try:
        assert predicted(port, photo) == expected
        stopped = time.monotonic()
        subprocess.run(["podman", "stop", "-t", "30", name], capture_output=True, env=podman_env, timeout=60)
        code = subprocess.run(
            ["podman", "inspect", name, "--format", "{{.State.ExitCode}}"], capture_output=True, text=True,
            env=podman_env,
        ).stdout.strip()  # fmt: skip
        assert code == "0" and time.monotonic() - stopped < 30
    finally:
        subprocess.run(["podman", "rm", "-f", name], capture_output=True, env=podman_env)


def test_the_serving_image_serves_a_model_from_an_s3_store(podman_env, tmp_path, bucket, s3_env):
    """The image keeps only S3's and the credential services' botocore models: a store on the test S3 server is
    fetched, verified and served."""
    from job.storage.s3client import make_client

    run, photo, expected = model_run(tmp_path)
    for name in ("model.onnx", "manifest.json"):
        make_client().upload_file(str(run / name), bucket, f"runs/img-serve/{name}")
    env_args = [a for key, value in s3_env.items() for a in ("-e", f"{key}={value}")]
    name, port = start_server(podman_env, env_args, [f"s3://{bucket}/runs/img-serve"])
    try:
        assert predicted(port, photo) == expected
    finally:
        subprocess.run(["podman", "rm", "-f", name], capture_output=True, env=podman_env)


def test_the_serving_image_verifies_a_signed_run_with_a_public_key(podman_env, tmp_path):
    """model-signing's verifier (and the pyOpenSSL it imports) works inside the image: a run signed with the job's
    own signer is served with --public-key."""
    from cryptography.hazmat.primitives import serialization as s
    from cryptography.hazmat.primitives.asymmetric import ec

    from job.storage.manifest import write_manifest
    from job.storage.signing import load_signer, sign_run

    run, photo, expected = model_run(tmp_path)
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "trainer.pem").write_bytes(key.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption()))
    public = key.public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "trainer.pub").write_bytes(public)
    (run / "metrics.json").write_text(json.dumps({"run_id": "img-serve"}))  # the signature names the run
    (run / "manifest.json").unlink()
    sign_run(run, load_signer(str(tmp_path / "trainer.pem"), certificate="", chain=""))
    write_manifest(run, "img-serve")
    mounts = ["-v", f"{run}:/model:ro", "-v", f"{tmp_path / 'trainer.pub'}:/keys/trainer.pub:ro"]
    name, port = start_server(podman_env, mounts, ["--public-key", "/keys/trainer.pub", "/model"])
    try:
        assert predicted(port, photo) == expected
    finally:
        subprocess.run(["podman", "rm", "-f", name], capture_output=True, env=podman_env)

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import built_once, job_run_once, make_image_tree, make_tar, train_args


@pytest.fixture
def opt_ml(tmp_path):
    """A SageMaker /opt/ml tree: hyperparameters (as SageMaker writes them), a train channel, checkpoints."""
    root = tmp_path / "opt_ml"
    (root / "input" / "config").mkdir(parents=True)
    (root / "input" / "data" / "train").mkdir(parents=True)
    (root / "checkpoints").mkdir()
    (root / "input" / "config" / "hyperparameters.json").write_text(
        json.dumps(
            {"epochs": '"3"', "batch-size": "32", "sagemaker_program": "ignored", "sagemaker_region": '"us-east-1"'}
        )
    )
    (root / "input" / "data" / "train" / "cifar.tar.gz").write_bytes(b"")
    return root


@pytest.fixture(scope="session")
def tiny_tar(tmp_path_factory, worker_id) -> Path:
    """An image-folder .tar.gz: 10 classes x 12 PNG images, no test split."""
    folder = built_once(
        tmp_path_factory,
        worker_id,
        "tiny",
        lambda root: make_tar(make_image_tree(root / "tree", per_class=12), root / "tiny.tar.gz"),
    )
    return folder / "tiny.tar.gz"


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, worker_id, tiny_tar):
    """One real 1-epoch run of the CLI on the tiny tar, with its checkpoint folder, trained once per test run and
    shared by every test that only needs *a* run (read-only: copy it to change it)."""

    def argv(base: Path) -> list[str]:
        args = train_args(str(tiny_tar), str(base / "store"), run_id="tiny-1", cache=str(base / "cache"), epochs=1)
        return [*args, "--checkpoint-dir", str(base / "ckpt")]

    base, proc = job_run_once(tmp_path_factory, worker_id, "trained-run", argv)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = base / "store"
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "dir": out / "tiny-1",
        "out": out,
        "summary": summary,
        "proc": proc,
        "cache": base / "cache",
        "checkpoint": base / "ckpt",
        "data": tiny_tar,
    }


@pytest.fixture(scope="session")
def second_run(tmp_path_factory, worker_id, trained_run):
    """A second 2-epoch run on the shared run's data and decode cache, with a TensorBoard folder, as a Vertex AI
    tuning trial: one training for the tests that read it (test_pipeline.py: the cache, the event files, the trial's
    metric; test_sweeps.py: the log as Katib's and SageMaker's collectors read it), built once per test run (xdist
    workers share it)."""

    def argv(base: Path) -> list[str]:
        args = train_args(trained_run["data"], base / "o", run_id="again", cache=trained_run["cache"], epochs=2)
        return [*args, "--log-dir", str(base / "tb")]

    def env(base: Path) -> dict:
        return {"CLOUD_ML_TRIAL_ID": "3", "CLOUD_ML_HP_METRIC_FILE": str(base / "hypertune" / "output.metrics")}

    base, proc = job_run_once(tmp_path_factory, worker_id, "pipeline-second-run", argv, env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {
        "proc": proc,
        "run": base / "o" / "again",
        "tb": base / "tb",
        "metric_file": base / "hypertune" / "output.metrics",
    }


# ---------------------------------------------------------------- S3: a real server on 127.0.0.1


@pytest.fixture(scope="session")
def s3_endpoint():
    from s3_server import start_server

    endpoint, server = start_server()
    yield endpoint
    if server:
        server.stop()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server on 127.0.0.1: SQLite backend, artifacts proxied into a folder."""
    import time
    import urllib.request

    from s3_server import free_port

    exe = shutil.which("mlflow") or str(Path(sys.executable).parent / "mlflow")
    base = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    proc = subprocess.Popen(
        [
            exe,
            "server",
            "--backend-store-uri",
            f"sqlite:///{base / 'db.sqlite'}",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--artifacts-destination",
            str(base / "artifacts"),
            "--workers",
            "1",
        ],
        # MLflow 3's job runner (seven huey consumer processes, each importing mlflow: 17 of the server's 22 CPU
        # seconds to start on 2 cores) runs server-side jobs that neither the job nor these tests use
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=subprocess.DEVNULL,
        stderr=(base / "log").open("w"),
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(uri + "/health", timeout=1).read()
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("mlflow server exited: " + (base / "log").read_text()[-2000:]) from None
            time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError("mlflow server did not start within 90 s")
    yield uri
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture
def s3_env(s3_endpoint, monkeypatch):
    """Environment of a job talking to the test server; the secret is unique so leaks can be searched for."""
    import secrets as _secrets

    env = {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "testing-key-id")
        if os.environ.get("S3_TEST_ENDPOINT")
        else "testing-key-id",
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "")
        if os.environ.get("S3_TEST_ENDPOINT")
        else "s3cr3t-" + _secrets.token_hex(12),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def s3_client(s3_env):
    """A client of the test server for the test's own setup and checks (each client costs 12-25 ms to make)."""
    from job.storage.s3client import make_client

    return make_client()


@pytest.fixture
def bucket(s3_client):
    import secrets as _secrets

    name = "test-" + _secrets.token_hex(6)
    s3_client.create_bucket(Bucket=name)
    return name


# ---------------------------------------------------------------- tiers as markers, and no silent skips

_TIER_MARKS = {"tf": "slow", "e2e": "slow", "serving": "serving", "image": "image"}

# Modules whose module fixtures train a model or start a server, and their work unit on the xdist workers: each
# unit runs on one worker, so the fixture is built once per run instead of once on each worker (measured before:
# the lineage fixture's two trainings ran on both workers, 37 s each; the INT8 GELU model, the preempted run and
# the MLflow server likewise). Every other test is a unit of its own, spread as `--dist load` spreads them.
SHARED_SETUPS = {
    "tests/e2e/test_mlflow.py": "mlflow",  # one tracking server for the three modules that use it
    "tests/e2e/test_lineage.py": "mlflow",
    "tests/e2e/test_secrets.py": "mlflow",
    "tests/e2e/test_mlflow_failing.py": "mlflow-failing",  # its module fixture starts every case at once
    "tests/tf/test_int8_gelu.py": "int8-gelu",
    "tests/tf/test_gate.py": "gate",
    "tests/e2e/test_resume.py": "resume",
    "tests/e2e/test_sweeps.py": "second-run",  # reads the log of second_run (above), as test_pipeline.py does
    # tests of a module that is not one unit but whose module fixture trains (each worker would train it again)
    "tests/e2e/test_s3.py::test_published_run_downloads_intact_against_its_manifest": "s3-run",
    "tests/e2e/test_s3.py::test_summary_line_is_machine_readable": "s3-run",
    "tests/e2e/test_s3.py::test_no_secret_in_logs_or_artifacts": "s3-run",
    "tests/e2e/test_s3.py::test_failed_upload_after_training_keeps_the_run_for_publish": "s3-run",
    "tests/e2e/test_signing.py::test_a_trained_run_is_signed_and_the_upstream_cli_verifies_it": "signed-training",
    "tests/e2e/test_signing.py::test_provenance_subjects_are_the_manifest_digests": "signed-training",
    "tests/e2e/test_signing.py::test_a_signing_failure_after_training_keeps_the_run_unpublished": "signed-training",
    "tests/e2e/test_pipeline.py::test_fast_preset_with_int8_trains_exports_and_passes_parity": "int8-run",
    "tests/e2e/test_pipeline.py::test_the_tta_level_is_what_the_model_says_it_is": "int8-run",
    "tests/e2e/test_pipeline.py::test_second_run_reads_the_decode_cache": "second-run",
    "tests/e2e/test_pipeline.py::test_log_dir_gets_tensorboard_event_files": "second-run",
    "tests/e2e/test_pipeline.py::test_a_vertex_tuning_trial_reports_validation_accuracy_per_epoch": "second-run",
}

# Modules whose single tests are long (whole trainings, clusters, platform retries), scheduled first: xdist hands out
# work units in collection order after the shared units, so the ~900 sub-second table rows come last and fill the
# gaps, instead of one worker finishing a 40 s test while the others wait (longest-first scheduling).
LONG_FIRST = [
    "tests/e2e/test_multiworker.py",
    "tests/e2e/test_ci_user.py",
    "tests/e2e/test_platform_retries.py",
    "tests/e2e/test_pipeline.py",
    "tests/tf/test_preemption.py",
    "tests/e2e/test_signals_data_stage.py",
    "tests/e2e/test_cli.py",
    "tests/tf/test_training.py",
]


def pytest_xdist_make_scheduler(config, log):
    """`--dist loadgroup` with the units of SHARED_SETUPS. xdist 3.8 cannot group by `xdist_group` marks under
    pytest 9 (it renames `item._nodeid`, which pytest 9 no longer reads: every test became its own unit), so the
    controller groups by module path, which it knows without collecting."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedSetupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path, _, test = nodeid.partition("::")
            return SHARED_SETUPS.get(path) or SHARED_SETUPS.get(f"{path}::{test.split('[', 1)[0]}", nodeid)

    return SharedSetupScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    """Each test gets its tier's marker from its folder (`-m "not slow"` is the fast tier), and `browser` where it
    drives Chromium."""
    rank = {path: i for i, path in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(LONG_FIRST)))  # stable: order kept within
    for item in items:
        parts = Path(str(item.fspath)).parts
        tier = parts[parts.index("tests") + 1] if "tests" in parts else ""
        if tier in _TIER_MARKS:
            item.add_marker(_TIER_MARKS[tier])
        if item.fspath.basename == "test_browser.py" or "page" in item.name or "chromium" in item.name:
            item.add_marker("browser")

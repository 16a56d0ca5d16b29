"""The real CLI in subprocesses: help, config errors, bad data, `publish`, platform entry points."""

import json
import subprocess
import sys

import pytest
from no_tensorflow import PRELUDE as NO_TENSORFLOW

from helpers import (
    ROOT,
    bad_tar,
    bad_tree,
    job_env,
    make_image_tree,
    make_run_dir,
    make_tar,
    run_job,
    sagemaker_env,
    train_args,
)
from job.storage.runs import local_manifest_problems as verify_manifest


def test_help_and_config_paths_do_not_import_tensorflow():
    code = (
        "import sys; from job.cli import build_parser, main; build_parser().format_help();"
        "rc = main(['train', '--print-config', '--epochs', '2']);"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TF imported'; sys.exit(rc)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"},
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["epochs"] == 2


def test_cli_help_lists_exit_codes_and_env_names():
    proc = run_job("train", "--help")
    assert proc.returncode == 0
    for text in ("JOB_EPOCHS", "--min-accuracy", "--limit", "143", "quality gate"):
        assert text in proc.stdout


@pytest.mark.parametrize(
    "args,env",
    [
        (["train", "--epochs", "x"], {}),
        (["train", "--preset", "nope"], {}),
        (["train", "--print-config"], {"JOB_BATCH_SIZE": "-1"}),
        (["train", "--out", "gs://bucket/x", "--print-config"], {}),
    ],
)
def test_cli_config_errors_exit_2_with_one_line(args, env, tmp_path):
    proc = run_job(*args, env=env)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]  # argparse's errors too: one line
    assert len(lines) == 1 and lines[0].startswith("error: config error"), proc.stderr


def test_print_config_records_sources(tmp_path):
    proc = run_job("train", "--print-config", "--epochs", "3", env={"JOB_SEED": "9"})
    cfg = json.loads(proc.stdout)
    assert cfg["sources"]["epochs"] == "--epochs" and cfg["sources"]["seed"] == "env JOB_SEED"


@pytest.mark.parametrize(
    "case",
    [
        "missing path",
        "not an archive",
        "corrupt gzip",
        "dotdot entry",
        "symlink entry",
        "corrupt image",
        "wrong size",
        "empty class",
    ],
)
def test_cli_bad_data_exits_3_with_one_line_and_publishes_nothing(tmp_path, case):
    if case == "missing path":
        source = tmp_path / "nope.tar.gz"
    elif case == "not an archive":
        source = tmp_path / "data.zip"
        source.write_bytes(b"PK\x03\x04 not a tar")
    elif case == "corrupt gzip":
        source = tmp_path / "data.tar.gz"
        good = make_tar(make_image_tree(tmp_path / "t", classes=2, per_class=2), tmp_path / "g.tar.gz").read_bytes()
        source.write_bytes(good[: len(good) // 2])
    elif case in ("dotdot entry", "symlink entry"):
        source = bad_tar(tmp_path, case)
    else:
        source = bad_tree(tmp_path, case)
    out = tmp_path / "store"
    proc = run_job("train", "--data", str(source), "--out", str(out), "--cache-dir", str(tmp_path / "cache"))
    assert proc.returncode == 3, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "data error" in errors[0] and str(source.name) in errors[0]
    assert [p.name for p in out.iterdir()] == []  # no run folder, no staging leftovers


def test_publish_command_copies_a_verified_run(tmp_path):
    d = make_run_dir(tmp_path)
    proc = run_job("publish", str(d), str(tmp_path / "store"))
    assert proc.returncode == 0, proc.stderr
    assert verify_manifest(tmp_path / "store" / "r1") == []
    assert json.loads(proc.stdout)["event"] == "run_published"


def test_publish_command_refuses_a_tampered_run(tmp_path):
    d = make_run_dir(tmp_path)
    (d / "sub" / "file.bin").write_text("tampered")
    proc = run_job("publish", str(d), str(tmp_path / "store"))
    assert proc.returncode == 3 and "does not match its manifest" in proc.stderr
    assert not (tmp_path / "store").exists()


def test_sagemaker_entrypoint_resolves_the_same_config(opt_ml):
    proc = run_job("train", "--print-config", env=sagemaker_env(opt_ml))
    cfg = json.loads(proc.stdout)
    assert cfg["epochs"] == 3 and cfg["sources"]["epochs"] == "hyperparameter epochs"
    assert cfg["out"] == str(opt_ml / "model") and cfg["sources"]["out"] == "platform"


def test_sagemaker_failure_reason_is_written(opt_ml):
    (opt_ml / "input" / "data" / "train" / "cifar.tar.gz").write_bytes(b"not a tar")
    proc = run_job("train", env=sagemaker_env(opt_ml))
    assert proc.returncode == 3
    failure = (opt_ml / "output" / "failure").read_text()
    assert failure.startswith("data error:") and "cifar.tar.gz" in failure


def test_version_names_the_package_and_the_revision():
    from job import __version__

    proc = run_job("--version")
    assert proc.returncode == 0 and proc.stdout.startswith(f"cifar10-job {__version__} (revision ")
    assert "unknown" not in proc.stdout  # a git checkout knows its revision


def test_dry_run_checks_everything_and_trains_nothing(tiny_tar, tmp_path):
    code = NO_TENSORFLOW + "from job.cli import main; sys.exit(main(sys.argv[1:]))"
    args = [
        "train",
        "--data",
        str(tiny_tar),
        "--out",
        str(tmp_path / "store"),
        "--checkpoint-dir",
        str(tmp_path / "ckpt"),
        "--dry-run",
        "--run-id",
        "planned",
    ]
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, env=job_env())
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["event"] == "plan" and plan["run_id"] == "planned"
    assert plan["data"]["images"] == {"train": 120, "test": 0} and len(plan["data"]["classes"]) == 10
    assert plan["publish"]["run"].endswith("store/planned") and plan["checkpoints"].endswith("ckpt/planned")
    assert not any(p.name == "planned" for p in (tmp_path / "store").iterdir())
    bad = run_job("train", "--data", str(tmp_path / "nope.tar"), "--out", str(tmp_path / "store"), "--dry-run")
    assert bad.returncode == 3


def test_a_runs_own_config_json_re_runs_it_and_flags_still_win(tmp_path):
    first = run_job("train", "--print-config", "--preset", "fast", "--epochs", "3", "--width", "16")
    (tmp_path / "config.json").write_text(first.stdout)
    again = run_job("train", "--print-config", "--config", str(tmp_path / "config.json"), "--epochs", "5")
    cfg, before = json.loads(again.stdout), json.loads(first.stdout)
    assert (cfg["width"], cfg["preset"], cfg["model"], cfg["epochs"]) == (16, "fast", "fast_net", 5)
    assert (
        cfg["sources"]["width"] == f"config file {tmp_path / 'config.json'}" and cfg["sources"]["epochs"] == "--epochs"
    )
    assert cfg["run_id"] != before["run_id"]  # a re-run is a new run
    (tmp_path / "bad.json").write_text('{"epochz": 3}')
    assert run_job("train", "--print-config", "--config", str(tmp_path / "bad.json")).returncode == 2


def _shell(command: str) -> subprocess.Popen:
    return subprocess.Popen(
        ["bash", "-o", "pipefail", "-c", command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=job_env(),
    )


def test_stdout_is_json_events_only_and_a_closed_reader_changes_nothing(tiny_tar, trained_run, tmp_path):
    def args(run_id: str) -> str:
        return " ".join(train_args(tiny_tar, tmp_path / "store", run_id=run_id, cache=tmp_path / f"cache-{run_id}"))

    # two independent runs (own run ids and caches; a store takes concurrent publishes), started together
    piped = _shell(f"{sys.executable} -m job {args('piped')} | head -1")
    closing = _shell(f"{sys.executable} -m job {args('closed')} >&-")
    stdout, stderr = piped.communicate(timeout=300)
    proc = subprocess.CompletedProcess(piped.args, piped.returncode, stdout, stderr)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["event"] == "run_started"  # one line, and it parses
    assert verify_manifest(tmp_path / "store" / "piped") == []  # the job went on to publish
    full = trained_run["proc"]  # a whole run's stdout and stderr
    events = [json.loads(line)["event"] for line in full.stdout.splitlines()]  # every line is JSON
    assert events[0] == "run_started" and events[-1] == "run_complete" and "epoch" in events
    assert "Epoch 1/1" in full.stderr  # people's progress goes to stderr
    stdout, stderr = closing.communicate(timeout=300)
    closed = subprocess.CompletedProcess(closing.args, closing.returncode, stdout, stderr)
    assert closed.returncode == 0 and verify_manifest(tmp_path / "store" / "closed") == [], closed.stderr[-2000:]

"""The hostile table of the secondary outputs and the platform's cluster environment: CI report files (GitHub's
step summary, GitLab's metrics.txt), the TensorBoard folder, a tracking server that fails its probe, and the pod
environment, TF_CONFIG, SM_HOSTS and resourceconfig.json. Each row runs the real CLI (a forked child, as in
test_hostile.py) and asserts the exit code, exactly one `error:` line naming the input, no traceback, nothing new
or changed in the store, nothing written outside (a FIFO, a device, a link's target), within a bounded time.
Every one of these is found before any data is read; `--dry-run` finds the same."""

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from forked import run_forked
from test_mlflow_failing import FailingServer

from helpers import ROOT, job_env, make_run_dir, run_measured, start_job, train_args, tree_snapshot, wait_for_event

GITHUB = {"GITHUB_ACTIONS": "true"}
ROW_SECONDS = 40  # the slowest row: a tracking server that never answers its probe (bounded at 15 s)


@dataclass
class Ctx:
    tmp: Path
    tiny_tar: Path

    @property
    def out(self) -> Path:
        return self.tmp / "store"

    def train(self, *extra: str, **flags) -> list[str]:
        return [*train_args(self.tiny_tar, self.out, cache=self.tmp / "cache", **flags), *extra]


@dataclass
class Row:
    name: str
    code: int
    build: Callable[[Ctx], tuple[list[str], dict]]
    says: str
    check: Callable[[Ctx, str], None] | None = None
    max_rss_mb: float | None = None
    tags: list[str] = field(default_factory=list)


def _summary(make: Callable[[Path], Path], *extra: str):
    def build(c: Ctx):
        return c.train(*extra), {**GITHUB, "GITHUB_STEP_SUMMARY": str(make(c.tmp))}

    return build


def _gitlab(make_project: Callable[[Path], Path]):
    return lambda c: (c.train(), {"GITLAB_CI": "true", "CI_PROJECT_DIR": str(make_project(c.tmp))})


def _log_dir(make: Callable[[Path], str], *extra: str):
    return lambda c: (c.train(*extra, log_dir=make(c.tmp)), {})


def _file(tmp: Path, name: str = "file", text: str = "keep me") -> Path:
    (tmp / name).write_text(text)
    return tmp / name


def _fifo(tmp: Path) -> Path:
    os.mkfifo(tmp / "fifo")
    return tmp / "fifo"


def _socket(tmp: Path) -> Path:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp / "sock"))
    return tmp / "sock"


def _link_to_victim(tmp: Path) -> Path:
    victim = _file(tmp, "victim.txt", "victim")
    (tmp / "link.md").symlink_to(victim)
    return tmp / "link.md"


def _dangling(tmp: Path) -> Path:
    (tmp / "dangling.md").symlink_to(tmp / "nowhere" / "x.md")
    return tmp / "dangling.md"


def _project_with(make: Callable[[Path], None]):
    def project(tmp: Path) -> Path:
        (tmp / "project").mkdir()
        make(tmp / "project")
        return tmp / "project"

    return project


def _victim_untouched(c: Ctx, stderr: str) -> None:
    assert (c.tmp / "victim.txt").read_text() == "victim"


def _file_untouched(c: Ctx, stderr: str) -> None:
    assert (c.tmp / "file").read_text() == "keep me"


def _no_escape_in_stderr(c: Ctx, stderr: str) -> None:
    assert "\x1b" not in stderr and "\x07" not in stderr


CI = [
    Row("GITHUB_STEP_SUMMARY: a folder", 4, _summary(lambda t: t), "is a folder"),
    Row("GITHUB_STEP_SUMMARY: in a missing folder", 4, _summary(lambda t: t / "no" / "summary.md"), "GITHUB_STEP"),
    Row("GITHUB_STEP_SUMMARY: /dev/full", 4, _summary(lambda t: Path("/dev/full")), "is a device"),
    Row("GITHUB_STEP_SUMMARY: /dev/null", 4, _summary(lambda t: Path("/dev/null")), "is a device"),
    Row("GITHUB_STEP_SUMMARY: a FIFO with no reader", 4, _summary(_fifo), "is a FIFO"),
    Row("GITHUB_STEP_SUMMARY: a socket", 4, _summary(_socket), "is a socket"),
    Row(
        "GITHUB_STEP_SUMMARY: a link to another file",
        4,
        _summary(_link_to_victim),
        "symbolic link",
        check=_victim_untouched,
    ),
    Row("GITHUB_STEP_SUMMARY: a dangling link", 4, _summary(_dangling), "symbolic link"),
    Row("GITHUB_STEP_SUMMARY: under a file", 4, _summary(lambda t: _file(t) / "s.md"), "not a folder"),
    Row(
        "GITHUB_STEP_SUMMARY: a folder, dry run",
        4,
        _summary(lambda t: t, "--dry-run"),
        "GITHUB_STEP_SUMMARY",
    ),
    Row(
        "CI_PROJECT_DIR: missing",
        4,
        _gitlab(lambda t: t / "no-such-project"),
        "metrics.txt",
    ),
    Row("CI_PROJECT_DIR: a file", 4, _gitlab(lambda t: _file(t)), "not a folder", check=_file_untouched),
    Row(
        "CI_PROJECT_DIR: metrics.txt a folder",
        4,
        _gitlab(_project_with(lambda p: (p / "metrics.txt").mkdir())),
        "is a folder",
    ),
]

TENSORBOARD = [
    Row("--log-dir: a file", 4, _log_dir(lambda t: str(_file(t))), "TensorBoard", check=_file_untouched),
    Row("--log-dir: under a file", 4, _log_dir(lambda t: str(_file(t) / "tb")), "TensorBoard"),
    Row("--log-dir: cannot be created", 4, _log_dir(lambda t: "/proc/no-such/tb"), "TensorBoard"),
    Row("--log-dir: /dev/null", 4, _log_dir(lambda t: "/dev/null"), "TensorBoard"),
    Row("--log-dir: a file, dry run", 4, _log_dir(lambda t: str(_file(t)), "--dry-run"), "TensorBoard"),
    Row(
        "--log-dir: a link to a file",
        4,
        _log_dir(lambda t: (t.joinpath("tblink").symlink_to(_file(t)), str(t / "tblink"))[1]),
        "TensorBoard",
        check=_file_untouched,
    ),
    Row(
        "SageMaker: /opt/ml/output/tensorboard a file",
        4,
        lambda c: _sagemaker_with_file_tensorboard(c),
        "TensorBoard",
    ),
    Row(
        "Vertex AI: AIP_TENSORBOARD_LOG_DIR a file",
        4,
        lambda c: (
            [*train_args(c.tiny_tar, c.out, cache=c.tmp / "cache")],
            {"AIP_MODEL_DIR": str(c.out), "AIP_TENSORBOARD_LOG_DIR": str(_file(c.tmp))},
        ),
        "TensorBoard",
        check=_file_untouched,
    ),
]


def _sagemaker_with_file_tensorboard(c: Ctx):
    opt_ml = c.tmp / "opt_ml"
    (opt_ml / "output").mkdir(parents=True)
    (opt_ml / "output" / "tensorboard").write_text("")
    env = {"JOB_OPT_ML": str(opt_ml), "SM_MODEL_DIR": str(c.out), "TRAINING_JOB_NAME": "tb-file"}
    return [*train_args(c.tiny_tar, c.out, cache=c.tmp / "cache")], env


# A tracking server that fails its probe: exit 4 before any data is read, in bounded time.
SERVERS: dict[str, FailingServer] = {}


def _tracking(how: str, *extra: str):
    def build(c: Ctx):
        server = FailingServer("probe", how)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        SERVERS[c.tmp.name] = server
        return c.train(*extra), {"MLFLOW_TRACKING_URI": server.uri, "MLFLOW_HTTP_REQUEST_TIMEOUT": "600"}

    return build


TRACKING = [
    Row("tracking probe: 503 with Retry-After 3600", 4, _tracking("503"), "MLflow tracking server"),
    Row("tracking probe: never answers", 4, _tracking("hang"), "MLflow tracking server"),
    Row("tracking probe: connection reset", 4, _tracking("reset"), "MLflow tracking server"),
    Row("tracking probe: never answers, dry run", 4, _tracking("hang", "--dry-run"), "MLflow tracking server"),
    Row(
        "tracking URI: terminal escapes",
        4,
        lambda c: (c.train(), {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9/\x1b]0;pwned\x07\x1b[2J"}),
        "MLflow tracking server",
        check=_no_escape_in_stderr,
    ),
]


def _indexed(**values: str):
    base = {"JOB_COMPLETION_INDEX": "0", "CLUSTER_WORKERS": "2", "CLUSTER_JOB_NAME": "cifar", "CLUSTER_SUBDOMAIN": "w"}
    return lambda c: (c.train(), {**base, **values})


def _jobset(**values: str):
    base = {"JOBSET_NAME": "cifar", "JOBSET_REPLICATED_JOB": "workers", "JOBSET_REPLICAS": "1"}
    return lambda c: (c.train(), {**base, "CLUSTER_PODS_PER_JOB": "2", **values})


def _tf_config(value) -> Callable:
    return lambda c: (c.train(), {"TF_CONFIG": value if isinstance(value, str) else json.dumps(value)})


def _sagemaker_hosts(hosts: str, current: str = "algo-1") -> Callable:
    def build(c: Ctx):
        env = {"JOB_OPT_ML": str(c.tmp / "opt_ml"), "SM_MODEL_DIR": str(c.out), "TRAINING_JOB_NAME": "hosts"}
        return [*train_args(c.tiny_tar, c.out, cache=c.tmp / "cache")], {
            **env,
            "SM_HOSTS": hosts,
            "SM_CURRENT_HOST": current,
        }

    return build


def _resourceconfig(content: bytes) -> Callable:
    def build(c: Ctx):
        config = c.tmp / "opt_ml" / "input" / "config"
        config.mkdir(parents=True)
        (config / "resourceconfig.json").write_bytes(content)
        env = {"JOB_OPT_ML": str(c.tmp / "opt_ml"), "SM_MODEL_DIR": str(c.out), "TRAINING_JOB_NAME": "rc"}
        return [*train_args(c.tiny_tar, c.out, cache=c.tmp / "cache")], env

    return build


WORKER = {"task": {"type": "worker", "index": 0}}
CLUSTER = [
    Row("CLUSTER_WORKERS: 1,000,000,000", 2, _indexed(CLUSTER_WORKERS="1000000000"), "CLUSTER_WORKERS", max_rss_mb=400),
    Row("CLUSTER_WORKERS: 1_000", 2, _indexed(CLUSTER_WORKERS="1_000"), "CLUSTER_WORKERS"),
    Row("CLUSTER_WORKERS: Arabic-Indic digits", 2, _indexed(CLUSTER_WORKERS="٣"), "CLUSTER_WORKERS"),
    Row(
        "JOB_COMPLETION_INDEX 1 without CLUSTER_WORKERS",
        2,
        lambda c: (c.train(), {"JOB_COMPLETION_INDEX": "1"}),
        "CLUSTER_WORKERS",
    ),
    Row("JOB_COMPLETION_INDEX: beyond the workers", 2, _indexed(JOB_COMPLETION_INDEX="2"), "JOB_COMPLETION_INDEX"),
    Row("JobSet: pod index beyond the pods per job", 2, _jobset(JOB_COMPLETION_INDEX="2"), "JOB_COMPLETION_INDEX"),
    Row("JobSet: job index beyond the replicas", 2, _jobset(JOBSET_JOB_INDEX="1"), "JOBSET_JOB_INDEX"),
    Row(
        "JobSet: 1000 x 1000 workers",
        2,
        _jobset(JOBSET_REPLICAS="1000", CLUSTER_PODS_PER_JOB="1000"),
        "at most 1024",
        max_rss_mb=400,
    ),
    Row("CLUSTER_JOB_NAME: non-ASCII", 2, _indexed(CLUSTER_JOB_NAME="cifär"), "CLUSTER_JOB_NAME"),
    Row("CLUSTER_JOB_NAME: 300 characters", 2, _indexed(CLUSTER_JOB_NAME="a" * 300), "CLUSTER_JOB_NAME"),
    Row("CLUSTER_JOB_NAME: upper case", 2, _indexed(CLUSTER_JOB_NAME="Cifar"), "CLUSTER_JOB_NAME"),
    Row("CLUSTER_SUBDOMAIN: a newline", 2, _indexed(CLUSTER_SUBDOMAIN="w\nerror: forged"), "CLUSTER_SUBDOMAIN"),
    Row("JOBSET_NAME: 64 characters", 2, _jobset(JOBSET_NAME="j" * 64), "JOBSET_NAME"),
    Row("CLUSTER_PORT: 70000", 2, _indexed(CLUSTER_PORT="70000"), "CLUSTER_PORT"),
    Row("CLUSTER_PORT: 0", 2, _indexed(CLUSTER_PORT="0"), "CLUSTER_PORT"),
    Row(
        "CLUSTER_ADDRESS_OVERRIDE: an empty address",
        2,
        _indexed(CLUSTER_ADDRESS_OVERRIDE="127.0.0.1:2222,"),
        "CLUSTER_ADDRESS_OVERRIDE",
    ),
    Row(
        "CLUSTER_ADDRESS_OVERRIDE: port 99999",
        2,
        _indexed(CLUSTER_ADDRESS_OVERRIDE="127.0.0.1:2222,127.0.0.1:99999"),
        "CLUSTER_ADDRESS_OVERRIDE",
    ),
    Row("TF_CONFIG: 84 KB", 2, _tf_config({"cluster": {"worker": ["h:1"] * 12_000}, **WORKER}), "limit"),
    Row("TF_CONFIG: 2000 workers", 2, _tf_config({"cluster": {"worker": ["h:1"] * 2000}, **WORKER}), "at most"),
    Row("TF_CONFIG: port 0", 2, _tf_config({"cluster": {"worker": ["h:0", "g:1"]}, **WORKER}), "host:port"),
    Row("TF_CONFIG: a host with a space", 2, _tf_config({"cluster": {"worker": ["a b:1"]}, **WORKER}), "host:port"),
    Row("TF_CONFIG: nested 100,000 deep", 2, _tf_config("[" * 100_000), "TF_CONFIG"),
    Row("TF_CONFIG: NaN index", 2, _tf_config('{"cluster": {}, "task": {"index": NaN}}'), "TF_CONFIG"),
    Row("SM_HOSTS: 2000 hosts", 2, _sagemaker_hosts(json.dumps([f"algo-{i}" for i in range(2000)])), "at most"),
    Row("SM_HOSTS: a host name with a slash", 2, _sagemaker_hosts('["algo-1", "a/b"]'), "not a DNS name"),
    Row("SM_HOSTS: nested 100,000 deep", 2, _sagemaker_hosts("[" * 100_000), "SM_HOSTS"),
    Row("SM_HOSTS: the same host twice", 2, _sagemaker_hosts('["algo-1", "algo-1"]'), "each once"),
    Row("resourceconfig.json: 2 MB", 2, _resourceconfig(b" " * 2_000_000 + b"{}"), "limit"),
    Row("resourceconfig.json: not JSON", 2, _resourceconfig(b"{hosts"), "not valid JSON"),
    Row("resourceconfig.json: hosts a string", 2, _resourceconfig(b'{"hosts": "a", "current_host": "a"}'), "hosts"),
]

BASELINE = [
    Row(
        "--baseline missing, dry run",
        3,
        lambda c: (c.train("--dry-run", baseline=c.tmp / "nowhere"), {}),
        "--baseline",
    ),
]

ALL = CI + TENSORBOARD + TRACKING + CLUSTER + BASELINE


@pytest.fixture
def ctx(tiny_tar, tmp_path):
    c = Ctx(tmp_path, tiny_tar)
    make_run_dir(c.out, "earlier-run")  # a store that already holds something, to prove it stays as it was
    (c.out / "latest.json").write_text('{"run_id": "earlier-run"}')
    return c


@pytest.mark.parametrize("row", ALL, ids=[r.name for r in ALL])
def test_hostile_output_or_cluster_input_ends_in_its_documented_state(row, ctx):
    args, extra_env = row.build(ctx)
    before = tree_snapshot(ctx.out)
    t0 = time.monotonic()
    try:
        if row.max_rss_mb:
            proc, peak_mb = run_measured([sys.executable, "-m", "job", *args], env=extra_env, timeout=120)
        else:
            proc, peak_mb = run_forked(args, env=job_env(**extra_env), cwd=ROOT, timeout=120)
    finally:
        server = SERVERS.pop(ctx.tmp.name, None)
        if server:
            server.release.set()
            server.shutdown()
    seconds = time.monotonic() - t0
    print(f"{row.name}: exit {proc.returncode} in {seconds:.1f} s, peak RSS {peak_mb:.0f} MiB")
    assert proc.returncode == row.code, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and row.says in errors[0], proc.stderr[-3000:]
    assert "stage data: started" not in proc.stderr  # found before any data was read
    assert tree_snapshot(ctx.out) == before
    assert seconds < ROW_SECONDS
    if row.max_rss_mb:
        assert peak_mb < row.max_rss_mb
    if row.check:
        row.check(ctx, proc.stderr)


def test_the_table_has_its_rows():
    assert len(ALL) >= 50


# ------------------------------------------------------------------------------ after the probe: never fatal


SUMMARY = {
    "run_id": "r1",
    "uri": "s3://bucket/a|b`c`<img src=x>[link](http://e)",
    "test_accuracy": 0.5,
    "onnx_test_accuracy": 0.5,
    "parity_max_abs_diff": None,
    "durations_s": {"train": 1.0},
    "baseline": {"uri": "s3://b/x|y", "delta": 0.0, "test_accuracy": 0.5, "max_regression": 0.005},
}


def _events(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


@pytest.mark.parametrize(
    "make",
    [
        lambda t: t,  # a folder
        lambda t: t / "missing" / "summary.md",
        lambda t: Path("/dev/full"),
        _fifo,  # no reader: would block forever without O_NONBLOCK
        _link_to_victim,
    ],
    ids=["folder", "missing folder", "/dev/full", "FIFO", "link"],
)
def test_a_step_summary_that_breaks_after_the_probe_is_a_warning_and_an_event(make, tmp_path, capsys):
    from job.report.ci import report_failure, report_success

    env = {**GITHUB, "GITHUB_STEP_SUMMARY": str(make(tmp_path))}
    t0 = time.monotonic()
    report_success(SUMMARY, env)
    report_failure("data", "bad\n::error::forged", env)
    assert time.monotonic() - t0 < 25
    failed = [e for e in _events(capsys) if e["event"] == "output_failed"]
    assert len(failed) == 2 and {e["output"] for e in failed} == {"GITHUB_STEP_SUMMARY"}
    if (tmp_path / "victim.txt").exists():
        assert (tmp_path / "victim.txt").read_text() == "victim"


@pytest.mark.parametrize("breaks", ["made a file", "under a file"])
def test_a_tensorboard_folder_that_breaks_during_training_is_a_warning_and_the_run_publishes(
    breaks, tiny_tar, tmp_path
):
    """The real CLI, 3 epochs: after epoch 1 (the probe passed, TensorBoard wrote it) the folder is replaced by a
    file, or its parent is: one warning, one `output_failed` event, the training finishes and is published."""
    parent = tmp_path / "logs"
    tb, store = parent / "tb", tmp_path / "store"
    proc = start_job(*train_args(tiny_tar, store, cache=tmp_path / "cache", epochs=3, log_dir=tb))
    try:
        wait_for_event(proc, "epoch")
        broken = tb if breaks == "made a file" else parent
        shutil.rmtree(broken)
        broken.write_text("keep me")
        out, err = proc.communicate(timeout=600)
    finally:
        proc.kill()
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err and not [line for line in err.splitlines() if line.startswith("error:")]
    failed = [e for e in events if e["event"] == "output_failed"]
    assert len(failed) == 1 and failed[0]["output"] == "TensorBoard", events
    assert err.count("TensorBoard log folder") == 1 and "the run's outcome is unchanged" in err
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [2, 3]  # epoch 1 was read before
    assert events[-1]["event"] == "run_complete"
    assert json.loads((store / "latest.json").read_text())["run_id"] == events[-1]["run_id"]
    assert broken.read_text() == "keep me"


# ------------------------------------------------------------------------------ permission denied
#
# The tests run as root, who writes anywhere. The job runs here without CAP_DAC_OVERRIDE (setpriv), as an
# unprivileged user would, against folders and files owned by another user (nobody, 0755 / 0644).

NO_OVERRIDE = ["--bounding-set=-dac_override,-dac_read_search,-fowner", "--inh-caps=-all", "--"]


def _not_ours(path: Path, *, file: bool = False) -> Path:
    path.write_text("keep me") if file else path.mkdir(parents=True)
    os.chown(path, 65534, 65534)
    return path


DENIED = [  # (name, build(tmp) -> (flags, env), exit code, the error line names)
    ("--out", lambda t: ({"out": _not_ours(t / "store")}, {}), 4, "--out"),
    ("--out under a folder", lambda t: ({"out": _not_ours(t / "theirs") / "store"}, {}), 4, "--out"),
    ("--log-dir", lambda t: ({"log_dir": _not_ours(t / "tb")}, {}), 4, "TensorBoard"),
    ("--checkpoint-dir", lambda t: ({"checkpoint_dir": _not_ours(t / "ckpt")}, {}), 4, "--checkpoint-dir"),
    (
        "GITHUB_STEP_SUMMARY",
        lambda t: ({}, {**GITHUB, "GITHUB_STEP_SUMMARY": str(_not_ours(t / "summary.md", file=True))}),
        4,
        "GITHUB_STEP_SUMMARY",
    ),
    ("--cache-dir", lambda t: ({"cache": _not_ours(t / "cache")}, {}), 0, ""),  # a warning; the run publishes
]


@pytest.mark.parametrize("name,build,code,says", DENIED, ids=[d[0] for d in DENIED])
def test_a_location_this_user_cannot_write_ends_in_its_documented_state(name, build, code, says, tiny_tar, tmp_path):
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root (to make folders owned by another user) and setpriv (util-linux)")
    flags, env = build(tmp_path)
    flags = {"out": tmp_path / "own-store", "cache": tmp_path / "own-cache", **flags}
    theirs = {p: tree_snapshot(p) if p.is_dir() else p.read_text() for p in tmp_path.iterdir() if p.stat().st_uid}
    args = train_args(tiny_tar, flags.pop("out"), **flags)
    proc = subprocess.run(
        ["setpriv", *NO_OVERRIDE, sys.executable, "-m", "job", *args],
        capture_output=True,
        text=True,
        env=job_env(**env),
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == code, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    if code:
        assert len(errors) == 1 and says in errors[0] and "Permission denied" in errors[0], proc.stderr[-3000:]
        assert "stage data: started" not in proc.stderr  # found before any data was read
    else:
        assert not errors and "could not write the data cache" in proc.stderr and "run_complete" in proc.stdout
    assert theirs and theirs == {
        p: tree_snapshot(p) if p.is_dir() else p.read_text() for p in tmp_path.iterdir() if p.stat().st_uid
    }


def test_metrics_txt_that_is_a_link_is_replaced_not_followed(tmp_path, capsys):
    from job.report.ci import report_success

    victim = _file(tmp_path, "victim.txt", "victim")
    (tmp_path / "metrics.txt").symlink_to(victim)
    report_success(SUMMARY, {"GITLAB_CI": "true", "CI_PROJECT_DIR": str(tmp_path)})
    assert victim.read_text() == "victim"
    assert (
        not (tmp_path / "metrics.txt").is_symlink()
        and "cifar10_test_accuracy 0.5" in (tmp_path / "metrics.txt").read_text()
    )
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_the_summary_table_does_not_break_on_a_hostile_store_uri(tmp_path):
    from job.report.ci import report_success

    summary = tmp_path / "summary.md"
    report_success(SUMMARY, {**GITHUB, "GITHUB_STEP_SUMMARY": str(summary)})
    rows = [line for line in summary.read_text().splitlines() if line.startswith("| ")]
    assert all(line.count("|") == 3 for line in rows), rows  # every row is still two cells
    text = summary.read_text()
    assert "`c`" not in text and "<img" not in text and "](" not in text
    assert "&#124;" in text


def test_a_failure_message_cannot_forge_or_break_a_workflow_command(capsys):
    from job.report.ci import report_failure

    report_failure("data", "100% bad\r\n::add-mask::secret\n::error::forged \x1b[2J\u202e", {"GITHUB_ACTIONS": "true"})
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("::error title=data error::100%25 bad")
    assert "::add-mask::" not in lines[0] and "::error::forged" not in lines[0]  # `::` broken inside the message
    assert "\x1b" not in err and "\u202e" not in err and "\r" not in err

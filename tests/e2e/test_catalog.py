"""The run catalog (`job runs ...`) and latest.json's meaning, on a local store and on the test S3 server:
newest complete run by training finish time, kept so under re-publishing and under concurrent publishers."""

import json
import os
import tempfile
import threading
from pathlib import Path

import forked
import pytest

from helpers import ROOT, job_env, make_run_dir, run_job_forked


def finished_run(base: Path, run_id: str, finished_at: str, accuracy: float) -> Path:
    metrics = {
        "run_id": run_id,
        "preset": "seed",
        "finished_at": finished_at,
        "test_accuracy": accuracy,
        "onnx_test_accuracy": accuracy,
    }
    files = {
        "metrics.json": json.dumps(metrics),
        "MODEL_CARD.md": f"# Model card: run `{run_id}`\n",
        "model.onnx": run_id.encode() * 100,
    }
    return make_run_dir(base, run_id, run_id=run_id, files=files)


@pytest.fixture
def runs(tmp_path):
    src = tmp_path / "src"
    return {
        "old": finished_run(src, "run-old", "2026-11-20T10:00:00Z", 0.61),
        "new": finished_run(src, "run-new", "2026-11-25T10:00:00Z", 0.68),
    }


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return {"uri": str(tmp_path / "store"), "env": {}}
    bucket, s3_env = request.getfixturevalue("bucket"), request.getfixturevalue("s3_env")
    return {"uri": f"s3://{bucket}/team/cifar", "env": s3_env}


def publish(run: Path, store: dict):
    proc = run_job_forked("publish", str(run), store["uri"], env=store["env"])
    assert proc.returncode == 0, proc.stderr[-2000:]


def runs_cmd(store: dict, *args: str):
    return run_job_forked("runs", *args, env=store["env"])


@pytest.fixture(scope="module")
def second_zygote():
    """A second zygote beside this process's own (tests/forked.py), so that two forked `job` processes run at
    once: each zygote runs one child at a time."""
    zygote = forked._Zygote()
    zygote.start()
    yield zygote
    zygote.stop()


def _exit_code_on(zygote, argv: list[str], env: dict, codes: list, at: int) -> None:
    """`python -m job ARGV` as a forked child of `zygote` (a thread's work): codes[at] = (exit code, stderr tail)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        status, _ = zygote.run(argv, env, ROOT, out.fileno(), err.fileno(), 120)
        err.seek(0)
        codes[at] = (os.waitstatus_to_exitcode(status), err.read().decode("utf-8", "replace")[-2000:])


def latest(store: dict) -> str:
    rows = [json.loads(line) for line in runs_cmd(store, "list", store["uri"], "--json").stdout.splitlines()]
    return next(r["run_id"] for r in rows if r["latest"])


def test_list_shows_every_run_newest_first_and_flags_latest(runs, store):
    publish(runs["new"], store)
    publish(runs["old"], store)  # published later, but trained earlier: latest.json stays at run-new
    table = runs_cmd(store, "list", store["uri"])
    assert table.returncode == 0, table.stderr
    print(f"runs list {store['uri']}:\n{table.stdout}")
    lines = table.stdout.splitlines()
    assert lines[1].startswith("run-new") and "complete (latest)" in lines[1] and lines[2].startswith("run-old")
    rows = [json.loads(line) for line in runs_cmd(store, "list", store["uri"], "--json").stdout.splitlines()]
    assert [(r["run_id"], r["complete"], r["latest"], r["test_accuracy"]) for r in rows] == [
        ("run-new", True, True, 0.68),
        ("run-old", True, False, 0.61),
    ]
    assert rows[0]["bytes"] > 0 and rows[0]["finished_at"] == "2026-11-25T10:00:00Z"


def test_show_download_and_verify(runs, store, tmp_path):
    publish(runs["new"], store)
    shown = runs_cmd(store, "show", store["uri"], "latest")
    assert shown.returncode == 0 and '"run_id": "run-new"' in shown.stdout and "# Model card" in shown.stdout
    got = runs_cmd(store, "download", store["uri"], "run-new", str(tmp_path / "dl"))
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "dl" / "model.onnx").read_bytes() == (runs["new"] / "model.onnx").read_bytes()
    assert runs_cmd(store, "verify", store["uri"]).returncode == 0
    missing = runs_cmd(store, "show", store["uri"], "run-nope")
    assert missing.returncode == 3 and "holds no run" in missing.stderr


def test_verify_and_download_catch_damage(runs, tmp_path):
    store = {"uri": str(tmp_path / "store"), "env": {}}
    publish(runs["new"], store)
    publish(runs["old"], store)
    (tmp_path / "store" / "run-old" / "manifest.json").unlink()  # an interrupted copy, say
    (tmp_path / "store" / "run-new" / "model.onnx").write_bytes(b"tampered")
    verify = runs_cmd(store, "verify", store["uri"])
    reports = {r["run_id"]: r for r in map(json.loads, verify.stdout.splitlines())}
    assert verify.returncode == 3
    assert reports["run-old"]["problems"] == [
        f"{tmp_path / 'store' / 'run-old'}: no manifest.json; the run is incomplete"
    ]
    assert reports["run-new"]["problems"] == ["model.onnx: 8 bytes, the manifest says 700"]
    download = runs_cmd(store, "download", store["uri"], "run-new", str(tmp_path / "dl"))
    assert download.returncode == 3 and "does not match its manifest" in download.stderr
    assert not (tmp_path / "dl").exists() and not list(tmp_path.glob(".dl.partial-*"))


def test_concurrent_publishers_leave_latest_on_the_newest_run(runs, store, tmp_path, second_zygote):
    """Two `job publish` processes at once (forked children of two zygotes, started together from two threads),
    in both start orders, six times: the pointer always ends on the run that finished training last (a lock file
    on a local store, If-Match on S3)."""
    assert run_job_forked("--help").returncode == 0  # this process's zygote up too, before the first round races
    for round_ in range(6):
        target = dict(
            store,
            uri=f"{store['uri']}-{round_}" if store["uri"].startswith("s3://") else str(tmp_path / f"store{round_}"),
        )
        order = [runs["old"], runs["new"]] if round_ % 2 else [runs["new"], runs["old"]]
        codes: list = [None, None]
        env = job_env(**target["env"])
        threads = [
            threading.Thread(
                target=_exit_code_on, args=(zygote, ["publish", str(r), target["uri"]], env, codes, i), daemon=True
            )
            for i, (zygote, r) in enumerate(zip((forked._ZYGOTE, second_zygote), order, strict=True))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=150)
        assert [c and c[0] for c in codes] == [0, 0], codes
        assert latest(target) == "run-new", f"round {round_}"


def test_what_a_store_holds_is_shown_safely(runs, tmp_path):
    """Escape sequences in a store's model card never reach the terminal; a malformed metrics.json is one error
    line for `show` and a dash in `list`."""
    store = {"uri": str(tmp_path / "store"), "env": {}}
    publish(runs["new"], store)
    (tmp_path / "store" / "run-new" / "MODEL_CARD.md").write_text("# card\x1b]0;owned\x07\x1b[2J\n")
    shown = runs_cmd(store, "show", store["uri"], "run-new")
    assert shown.returncode == 0 and "\x1b" not in shown.stdout and "\\x1b]0;owned" in shown.stdout
    (tmp_path / "store" / "run-new" / "metrics.json").write_text("[1, 2]")
    listed = runs_cmd(store, "list", store["uri"], "--json")
    row = json.loads(listed.stdout.splitlines()[0])
    assert listed.returncode == 0 and row["test_accuracy"] is None and row["complete"] is False
    shown = runs_cmd(store, "show", store["uri"], "run-new")
    assert shown.returncode == 3 and len(shown.stderr.splitlines()) == 1 and "expected a JSON object" in shown.stderr
    assert "Traceback" not in shown.stderr


def test_runs_list_json_is_strict_json_when_a_metric_is_nan(tmp_path):
    """A diverged run's metrics.json may hold NaN (read through the JSON gate with NaN allowed): every JSON the
    catalog prints is strict, NaN and Infinity written null (before: the token NaN, which Node's JSON.parse
    rejects)."""

    def strict(text):
        return json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(AssertionError(f"{c} in {text}")))

    store = tmp_path / "store"
    make_run_dir(store, "r1", run_id="r1", files={"metrics.json": '{"test_accuracy": NaN, "preset": "seed"}'})
    (store / "latest.json").write_text(json.dumps({"run_id": "r1"}))
    r = run_job_forked("runs", "list", str(store), "--json", cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip(), r.stderr[-300:]
    for line in r.stdout.splitlines():
        assert strict(line)["test_accuracy"] is None
    show = run_job_forked("runs", "show", str(store), "r1", cwd=ROOT)
    assert show.returncode == 0, show.stderr[-300:]
    document = show.stdout[: show.stdout.index("\n}\n") + 2]  # the JSON object, before the model card
    assert strict(document)["test_accuracy"] is None

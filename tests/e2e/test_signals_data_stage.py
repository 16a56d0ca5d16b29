"""SIGTERM in the data stage is never lost. Two windows lost it, both places where CPython drops an exception a
signal handler raised (job.errors.Terminated) without a trace:
- the decode pool forks its workers, and CPython runs the Python at-fork callbacks (logging's lock release) right
  after fork(), reporting what they raise as "Exception ignored" (116 of 314 SIGTERMs sent to a process forking in
  a loop). The pool forks with the signals held (job.runtime.signals.signals_held) and raises them right after.
- tarfile.extractfile() wraps a Python file object in an io.BufferedReader, whose constructor calls its tell() and
  clears what it raised, and whose finalizer clears what close()/flush() raised: a signal handled there was gone,
  and the run went on to publish (6 of 140 real-CLI runs; 36 of 2,094 call points of the archive reader). The
  reader reads members from the archive's stream (job.data.entries.member_bytes) and opens it with one
  decompressor.
For every other such place the handlers record their signal, and each stage start and commit raises it again; an
error that a cut-short cleanup raises in place of the signal's exception ends the run as the signal."""

import json
import signal
import subprocess
import sys
import time

import pytest

from helpers import ROOT, job_env, make_image_tree, make_tar, signal_after, train_args, tree_snapshot

HAMMER = r"""
import collections, io, os, random, signal, sys, threading, time
import numpy as np
from PIL import Image
from job.errors import Terminated
from job.data import decode

lost_in = collections.Counter()
sys.unraisablehook = lambda u: lost_in.update([repr(u.object)[:60]])
def handler(signum, frame):
    raise Terminated()
signal.signal(signal.SIGTERM, handler)
ballast = [bytes(4096) for _ in range(60000)]  # a heap like a loaded archive's: each fork takes longer
png = io.BytesIO()
Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(png, "PNG")
chunks = [(["a.png"] * 8, [png.getvalue()] * 8)] * 4
t0 = time.monotonic()
decode._decode_in_pool(chunks, 2)
typical = time.monotonic() - t0
outcomes = collections.Counter()
for _ in range(int(sys.argv[1])):
    timer = threading.Timer(random.uniform(0, typical * 1.2), os.kill, (os.getpid(), signal.SIGTERM))
    try:
        timer.start()
        decode._decode_in_pool(chunks, 2)
        timer.join()
        time.sleep(0.05)  # the signal came after the pool: its handler raises here
        outcomes["lost"] += 1
    except Terminated:
        outcomes["raised"] += 1
    timer.join()
print(dict(outcomes), dict(lost_in), f"{typical:.3f}")
"""


def test_no_sigterm_is_lost_while_the_decode_pool_starts_or_stops():
    """One SIGTERM per pool start, at a random moment of it (forks, work, shutdown): every one is raised."""
    proc = subprocess.run(
        [sys.executable, "-c", HAMMER, "150"], capture_output=True, text=True, env=job_env(), cwd=ROOT, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    print("pool starts with a SIGTERM in them:", proc.stdout.strip())
    assert proc.stdout.startswith("{'raised': 150}") and " {} " in proc.stdout, proc.stdout + proc.stderr[-2000:]


def test_a_terminated_exception_dropped_by_a_finalizer_is_delivered_again():
    code = (
        "import signal, sys, time\n"
        "from job.errors import Terminated\n"
        "from job.runtime.signals import redeliver_swallowed_signals\n"
        "def handler(s, f):\n    raise Terminated()\n"
        "signal.signal(signal.SIGTERM, handler)\n"
        "redeliver_swallowed_signals()\n"
        "class Finalized:\n    def __del__(self):\n        raise Terminated()  # what a handler run here does\n"
        "Finalized()\n"
        "try:\n    time.sleep(5)\n    sys.exit(0)\n"
        "except Terminated:\n    sys.exit(143)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=job_env(), timeout=60)
    assert proc.returncode == 143, proc.stderr
    assert "delivering it again" in proc.stderr and "Exception ignored" not in proc.stderr


SWEEP = r"""
import collections, json, signal, sys, time
from pathlib import Path
from job.errors import Terminated
from job.runtime import signals
from job.data.entries import iter_tar

signals.install_handlers()
archives = [Path(a) for a in sys.argv[1:]]

def read_all():
    for archive in archives:
        list(iter_tar(archive))

def calls():
    n = [0]
    def count(frame, event, arg):
        n[0] += event == "call"
    sys.settrace(count)
    read_all()
    sys.settrace(None)
    return n[0]

outcomes, dropped_at = collections.Counter(), collections.Counter()
read_all()  # first use: imports and caches are not call points of the reader
for k in range(1, calls() + 1):
    seen = [0]
    def at_kth_call(frame, event, arg):
        if event == "call":
            seen[0] += 1
            if seen[0] == k:  # the signal's handler runs here, as it would at this function's first bytecode
                sys.settrace(None)
                at_kth_call.where = f"{Path(frame.f_code.co_filename).name}:{frame.f_code.co_name}"
                signal.raise_signal(signal.SIGTERM)
    signals._SIGNALLED.clear()
    finished = False
    try:
        sys.settrace(at_kth_call)
        read_all()
        sys.settrace(None)
        finished = True
        if signals._SIGNALLED:  # a finalizer's: reported to sys.unraisablehook, which sends it again in 20 ms
            time.sleep(0.5)
            dropped_at[at_kth_call.where] += 1
        outcomes["dropped" if signals._SIGNALLED else "not reached"] += 1
    except Terminated:
        outcomes["sent again" if finished else "raised"] += 1
print(json.dumps([outcomes, dropped_at]))
"""


def test_a_sigterm_handled_at_any_function_call_of_the_archive_reader_is_raised(tmp_path):
    """Deterministic: the handler run at each Python function call of reading a plain and a gzipped archive (every
    place the interpreter runs a handler at a call, including the calls C code makes back into Python, where the
    dropped ones were), once per call point: each one raises Terminated out of the reader, but in the archive
    stream's __del__, where CPython reports it to sys.unraisablehook, and the job's hook sends it again."""
    tree = make_image_tree(tmp_path / "tree", classes=3, per_class=1)
    archives = [make_tar(tree, tmp_path / "plain.tar"), make_tar(tree, tmp_path / "packed.tar.gz")]
    proc = subprocess.run(
        [sys.executable, "-c", SWEEP, *map(str, archives)],
        capture_output=True,
        text=True,
        env=job_env(),
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    print("SIGTERM at each call of the archive reader:", proc.stdout.strip())
    outcomes, _ = json.loads(proc.stdout)
    assert outcomes.get("raised", 0) > 100 and "dropped" not in outcomes, proc.stdout
    assert outcomes.get("sent again", 0) <= 2, proc.stdout  # only the archive streams' __del__ (one each)


def test_a_signal_that_c_code_dropped_is_raised_at_the_next_stage_and_before_any_commit():
    """io.BufferedReader() calls its raw file's tell() and clears what it raised: a SIGTERM handled there is
    dropped (the script checks that it was). The next stage start raises it, and so does a commit point."""
    code = (
        "import io, signal, sys\n"
        "from job.errors import Terminated\n"
        "from job.runtime import signals\n"
        "from job.runtime.telemetry import Timer\n"
        "signals.install_handlers()\n"
        "class Raw(io.RawIOBase):\n"
        "    def readable(self):\n        return True\n"
        "    def tell(self):\n        signal.raise_signal(signal.SIGTERM)  # its handler raises Terminated here\n"
        "io.BufferedReader(Raw())\n"
        "print('dropped by BufferedReader', flush=True)\n"
        "for check in (lambda: Timer().stage('next'), signals.deferred_signals):\n"
        "    try:\n"
        "        with check():\n            print('the block ran', flush=True)\n"
        "    except Terminated:\n        print('raised', flush=True)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=job_env(), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["dropped by BufferedReader", "raised", "raised"], proc.stdout + proc.stderr
    assert proc.stderr.count("SIGTERM arrived") == 2 and "Exception ignored" not in proc.stderr, proc.stderr


def test_an_error_raised_in_place_of_terminated_ends_the_run_as_the_signal():
    """A cleanup cut short by Terminated can raise an error of its own that replaces it (np.savez closes its zip in
    a `finally`, and that close raises ValueError while a member is being written): the CLI still ends in 143."""
    code = (
        "import signal, sys\n"
        "from job import cli\n"
        "def cmd(args, platform):\n"
        "    try:\n        signal.raise_signal(signal.SIGTERM)\n"
        "    finally:\n        raise ValueError('a cleanup that fails when cut short')\n"
        "cli.cmd_runs = cmd\n"
        "sys.exit(cli.main(['runs', 'list', '/nonexistent']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=job_env(), timeout=60)
    assert proc.returncode == 143, proc.stderr
    assert "terminated: SIGTERM" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert "ValueError was raised on the way out" in proc.stderr


@pytest.fixture(scope="module")
def pooled_tar(tmp_path_factory):
    """4,100 images: enough for the decode pool (PARALLEL_FROM = 4,000)."""
    base = tmp_path_factory.mktemp("pooled")
    return make_tar(make_image_tree(base / "tree", per_class=410, seed=5), base / "pooled.tar")


DELAYS = [0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.3, 1.6, 2.0]


def test_sigterm_at_any_moment_of_the_data_stage_ends_in_143_with_nothing_published(pooled_tar, tmp_path):
    """The real CLI, a cold decode cache each time (archive read, pool forks, decode, pool shutdown, cache write),
    --limit 300 --epochs 1: a SIGTERM at each delay after `stage data: started` ends in 143, nothing published."""
    outcomes = []
    for i, delay in enumerate(DELAYS):
        store, cache = tmp_path / f"store-{i}", tmp_path / f"cache-{i}"
        store.mkdir()
        proc = subprocess.Popen(
            [sys.executable, "-m", "job", *train_args(pooled_tar, store, cache=cache, run_id=f"t{i}", limit=300)],
            env=job_env(),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        seen, late = signal_after(proc, "stage data: started", signal.SIGTERM, delay)
        sent_at = time.strftime("%H:%M:%S")
        if proc.returncode is not None:  # the run ended before this process could send anything: not a signal case
            proc.communicate(timeout=60)
            outcomes.append((delay, proc.returncode, f"ended before the signal ({late:.1f} s late)"))
            continue
        out, err = proc.communicate(timeout=300)
        stderr = "".join(seen) + err
        publishing = [line[:8] for line in stderr.splitlines() if "stage publish: started" in line]
        if proc.returncode == 0 and publishing and sent_at >= publishing[0]:  # a starved test signalled too late
            outcomes.append((delay, 0, f"sent at {sent_at}, publishing since {publishing[0]} ({late:.1f} s late)"))
            continue
        reached = "stage startup" in stderr  # the data stage was over when the signal came
        outcomes.append((delay, proc.returncode, "after data" if reached else "in data"))
        data_stage = stderr[stderr.find("stage data: started") :][:4000]
        assert proc.returncode == 143, f"delay {delay} (sent {late:.2f} s late): exit {proc.returncode}\n{data_stage}"
        assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr[-3000:]
        assert "run_complete" not in out
        failed = [json.loads(line) for line in out.splitlines() if '"run_failed"' in line]
        assert [(e["kind"], e["exit_code"]) for e in failed] == [("terminated", 143)], out[-2000:]
        assert tree_snapshot(store) == {}, f"delay {delay}: something was published"
    print("SIGTERM after `stage data: started`:", outcomes)
    assert sum(1 for o in outcomes if o[2] == "in data") >= len(DELAYS) // 2  # most landed in the data stage

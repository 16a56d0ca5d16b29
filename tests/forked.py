"""Run the real CLI in a forked child instead of a fresh interpreter: the same process boundary (own exit status,
own stdin/stdout/stderr file descriptors, own signal handlers, own peak RSS from wait4), without paying the
interpreter start and the imports of job, boto3, NumPy, Pillow and ONNX Runtime once per row.

The parent must not have imported TensorFlow (its thread pools do not survive a fork): where it has, the row
runs in a fresh interpreter instead. A child that needs TensorFlow imports it itself, as `python -m job` does. `test_forked_runner_matches_the_subprocess_runner` (in the hostile
tables) runs a sample of rows both ways and compares exit code and error line.

Measured on 2 cores (Intel Xeon, AMX): `python -m job runs verify <store>` costs about 0.9 s of start-up
(interpreter + imports) before its first line of work; a forked child starts in a few milliseconds.
"""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("tensorflow", "keras", "tf2onnx")

# Imported once in the parent so every child has them already (what a fresh interpreter spends its start on).
import boto3  # noqa: E402,F401
import model_signing  # noqa: E402,F401  (what a reader loads with --public-key)
import numpy  # noqa: E402,F401
import onnxruntime  # noqa: E402,F401
from cryptography import x509  # noqa: E402,F401
from PIL import Image  # noqa: E402,F401

import job.catalog  # noqa: E402
import job.cli  # noqa: E402
import job.predict  # noqa: E402
import job.serving  # noqa: E402
import job.storage.signing  # noqa: E402


def _child(argv: list[str], env: dict, cwd: Path, out: int, err: int) -> None:
    code = 1
    try:
        stdin = os.open(os.devnull, os.O_RDONLY)
        os.dup2(stdin, 0)
        os.dup2(out, 1)
        os.dup2(err, 2)
        sys.stdin = open(0, closefd=False)
        sys.stdout = io.TextIOWrapper(open(1, "wb", closefd=False), write_through=True)
        sys.stderr = io.TextIOWrapper(open(2, "wb", closefd=False), write_through=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        root = logging.getLogger()
        for handler in list(root.handlers):  # pytest's capture handlers: the job's logging starts from nothing
            root.removeHandler(handler)
        root.setLevel(logging.WARNING)
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        sys.argv = ["python -m job", *argv]
        code = job.cli.main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # what an uncaught exception does to `python -m job`: a traceback, exit 1
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code if isinstance(code, int) else 1)


def run_forked(
    argv: list[str], *, env: dict, cwd: Path, timeout: float = 120
) -> tuple[subprocess.CompletedProcess, float]:
    """`python -m job *argv` as a forked child: (CompletedProcess with text stdout/stderr, peak RSS in MiB).

    The peak counts the pages shared with the parent at the fork: rows that bound memory keep the subprocess
    runner (helpers.run_measured)."""
    if any(m in sys.modules for m in HEAVY):  # TensorFlow's threads do not survive a fork: a fresh interpreter
        return run_fresh(argv, env=env, cwd=cwd, timeout=timeout)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(argv, env, cwd, out.fileno(), err.fileno())
        deadline = time.monotonic() + timeout
        delay = 0.001
        while True:
            done, status, usage = os.wait4(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.wait4(pid, 0)
                raise subprocess.TimeoutExpired(["job", *argv], timeout)
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        proc = subprocess.CompletedProcess(
            ["job", *argv],
            code,
            out.read().decode("utf-8", "replace"),
            err.read().decode("utf-8", "replace"),
        )
    return proc, usage.ru_maxrss / 1024


def run_fresh(argv, *, env, cwd, timeout):
    """`python -m job *argv` in a fresh interpreter (stdin closed): the runner the forked one is compared with."""
    proc = subprocess.run(
        [sys.executable, "-m", "job", *argv],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )
    return proc, 0.0

"""Run the real CLI in a forked child instead of a fresh interpreter: the same process boundary (own exit status,
own stdin/stdout/stderr file descriptors, own signal handlers, own peak RSS from wait4), without paying the
interpreter start and the imports of job, boto3, NumPy, Pillow and ONNX Runtime once per row.

The children are forked by a zygote: one fresh interpreter per test process, started on the first row, that has
imported all of that and never imports TensorFlow (whose thread pools do not survive a fork). The test process
itself may have loaded TensorFlow (the tf tier runs in the same xdist workers, and test_training.py imports Keras
at collection): forking it would not be safe, and before the zygote every row fell back to a fresh interpreter
there. A child that needs TensorFlow imports it itself, as `python -m job` does.
`test_forked_runner_matches_the_subprocess_runner` (in the hostile tables) runs a sample of rows both ways and
compares exit code and error line.

Protocol (a SOCK_SEQPACKET socket pair, one message per send): the test process sends (argv, env, cwd) with the
child's stdout and stderr file descriptors attached; the zygote forks, answers the child's pid, waits for it and
answers (wait status, peak RSS in KiB). On a timeout the test process kills the child by that pid.

Measured on 2 cores (Intel Xeon, AMX): `python -m job runs verify <store>` costs about 0.9 s of start-up
(interpreter + imports) before its first line of work; a forked child starts in a few milliseconds.
"""

from __future__ import annotations

import atexit
import io
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
MESSAGE_BYTES = 1 << 20  # a request is argv + env + cwd: a few KiB


def _child(argv: list[str], env: dict, cwd: str, out: int, err: int) -> None:
    code = 1
    try:
        import job.cli

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
        for handler in list(root.handlers):  # the job's logging starts from nothing
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


def serve(fd: int) -> None:
    """The zygote's loop (a fresh interpreter runs it): import once, then one forked child per request."""
    # What every child needs already (what a fresh interpreter spends its start on); never TensorFlow.
    import boto3  # noqa: F401
    import model_signing  # noqa: F401  (what a reader loads with --public-key)
    import numpy  # noqa: F401
    import onnxruntime  # noqa: F401
    from cryptography import x509  # noqa: F401
    from no_tensorflow import loaded_heavy
    from PIL import Image  # noqa: F401

    import job.catalog
    import job.cli
    import job.predict
    import job.serving
    import job.storage.signing  # noqa: F401
    from job.storage.s3client import _session

    # botocore's parsed S3 model, shared by every session of a process: parsed here once, every child inherits it
    # (keys given, so no credential lookup runs in the zygote)
    _session().client("s3", region_name="us-east-1", aws_access_key_id="zygote", aws_secret_access_key="zygote")

    assert not loaded_heavy(), f"the zygote imported {loaded_heavy()}: its children could not fork safely"
    control = socket.socket(fileno=fd)
    control.send(b"ready")
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(control, MESSAGE_BYTES, 2)
        except (ConnectionError, OSError):
            return
        if not data:  # the test process closed its end: it is done
            return
        argv, env, cwd = pickle.loads(data)
        out, err = fds
        pid = os.fork()
        if pid == 0:
            control.close()
            _child(argv, env, cwd, out, err)
        os.close(out)
        os.close(err)
        control.send(pickle.dumps(pid))
        _, status, usage = os.wait4(pid, 0)
        control.send(pickle.dumps((status, usage.ru_maxrss)))


class _Zygote:
    """This test process's zygote, started on first use and again if it died."""

    def __init__(self):
        self.lock = threading.Lock()
        self.sock: socket.socket | None = None
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        code = f"import sys; sys.path.insert(0, {str(HERE)!r}); import forked; forked.serve({theirs.fileno()})"
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOB_")}
        env.update(PYTHONPATH=str(HERE.parent), TF_CPP_MIN_LOG_LEVEL="2")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            env=env,
            cwd=HERE.parent,
        )
        theirs.close()
        ours.settimeout(300)
        if ours.recv(16) != b"ready":
            raise RuntimeError("the forked runner's zygote did not start")
        self.sock = ours
        atexit.register(self.stop)

    def stop(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def run(self, argv, env, cwd, out: int, err: int, timeout: float) -> tuple[int, int]:
        """(wait status, peak RSS in KiB) of one forked child; the child is killed after `timeout` seconds."""
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                self.stop()
                self.start()
            self.sock.settimeout(60)
            socket.send_fds(self.sock, [pickle.dumps((list(argv), dict(env), str(cwd)))], [out, err])
            pid = pickle.loads(self.sock.recv(MESSAGE_BYTES))
            self.sock.settimeout(timeout)
            try:
                return pickle.loads(self.sock.recv(MESSAGE_BYTES))
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)
                self.sock.settimeout(60)
                self.sock.recv(MESSAGE_BYTES)  # the zygote reaped it
                raise subprocess.TimeoutExpired(["job", *argv], timeout) from None


_ZYGOTE = _Zygote()


def run_forked(
    argv: list[str], *, env: dict, cwd: Path, timeout: float = 120
) -> tuple[subprocess.CompletedProcess, float]:
    """`python -m job *argv` as a forked child: (CompletedProcess with text stdout/stderr, peak RSS in MiB).

    The peak counts the pages shared with the zygote at the fork: rows that bound memory keep the subprocess
    runner (helpers.run_measured)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        status, peak_kib = _ZYGOTE.run(argv, env, cwd, out.fileno(), err.fileno(), timeout)
        out.seek(0)
        err.seek(0)
        proc = subprocess.CompletedProcess(
            ["job", *argv],
            os.waitstatus_to_exitcode(status),
            out.read().decode("utf-8", "replace"),
            err.read().decode("utf-8", "replace"),
        )
    return proc, peak_kib / 1024


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

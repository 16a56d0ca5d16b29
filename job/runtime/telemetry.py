"""What a run reports about itself: per-stage wall time, peak memory, the versions that produced it."""

import contextlib
import logging
import resource
import sys
import time

from job.runtime.signals import raise_dropped_signal

log = logging.getLogger("job")

VERSIONED_PACKAGES = (
    "tensorflow-cpu",
    "tensorflow",
    "keras",
    "tf2onnx",
    "onnx",
    "onnxruntime",
    "numpy",
    "scikit-learn",
)


class Timer:
    def __init__(self):
        self.stages: dict[str, float] = {}
        self.started = time.perf_counter()

    @contextlib.contextmanager
    def stage(self, name: str):
        raise_dropped_signal()  # one that the previous stage's code dropped ends the run here
        log.info("stage %s: started", name)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.stages[name] = round(time.perf_counter() - t0, 3)
        log.info("stage %s: done in %.1fs", name, self.stages[name])

    @property
    def total(self) -> float:
        return round(time.perf_counter() - self.started, 3)

    def durations(self) -> dict[str, float]:
        return {**self.stages, "total": self.total}


def peak_rss_mb() -> float:
    """Peak resident memory of this process and its finished children (decode workers), in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, children) / 1024, 1)


def revision() -> str:
    """The source revision: the image's build argument (CIFAR10_JOB_REVISION, set by the Dockerfile), else the
    git checkout's, else 'unknown'."""
    import os
    import subprocess
    from pathlib import Path

    if os.environ.get("CIFAR10_JOB_REVISION"):
        return os.environ["CIFAR10_JOB_REVISION"]
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parents[2],
        )
        return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict:
    """The producing versions; the job's own is job.__version__ (the one place it is written)."""
    from importlib.metadata import PackageNotFoundError, version

    from job import __version__

    out = {"python": sys.version.split()[0], "cifar10-job": __version__, "revision": revision()}
    for pkg in VERSIONED_PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out

"""Python 3.11 virtualenvs for the compatibility tier: the serving images' TensorFlow versions and the SageMaker
SDK, each from its requirements file in infra/serving/. Made once in the job's cache folder (SERVING_VENVS
overrides), keyed by the requirements' hash, so CI on the same machine reuses them; a fresh machine builds them."""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from job.data import default_cache_dir

VENVS = Path(os.environ.get("SERVING_VENVS") or default_cache_dir() / "serving-venvs")


def compat_venv(requirements: Path) -> Path:
    """The venv's python (made on first use); the tier fails, naming the step, where it cannot be made."""
    root = VENVS / f"{requirements.stem}-{hashlib.sha256(requirements.read_bytes()).hexdigest()[:12]}"
    python = root / "bin" / "python"
    if (root / ".installed").is_file():
        return python
    base = shutil.which("python3.11") or sys.executable
    shutil.rmtree(root, ignore_errors=True)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", str(requirements)]
    for step in ([base, "-m", "venv", str(root)], pip):
        proc = subprocess.run(step, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            pytest.fail(f"cannot make the venv for {requirements.name} ({' '.join(step[:3])}): {proc.stderr[-800:]}")
    (root / ".installed").write_text(requirements.read_text())
    return python

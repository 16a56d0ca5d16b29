import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import make_image_tree, make_tar, run_job  # noqa: E402


@pytest.fixture(scope="session")
def tiny_tar(tmp_path_factory) -> Path:
    """An image-folder .tar.gz: 10 classes x 12 PNG images, no test split."""
    root = tmp_path_factory.mktemp("tiny")
    make_image_tree(root / "tree", per_class=12)
    return make_tar(root / "tree", root / "tiny.tar.gz")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_tar):
    """One real 1-epoch run of the CLI on the tiny tar, shared by the end-to-end checks."""
    base = tmp_path_factory.mktemp("e2e")
    out, cache = base / "store", base / "cache"
    proc = run_job("train", "--data", str(tiny_tar), "--out", str(out), "--run-id", "tiny-1", "--epochs", "1",
                   "--cache-dir", str(cache))
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"dir": out / "tiny-1", "out": out, "summary": summary, "proc": proc, "cache": cache, "data": tiny_tar}

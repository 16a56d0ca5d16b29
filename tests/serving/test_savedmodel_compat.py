"""The serving-compatibility tier (`make test-serving`): each preset's SavedModel, in the layout each platform
serves it from, loaded by the TensorFlow versions of today's serving images (SageMaker TF Serving 2.20, Vertex
AI tf2-cpu.2-15), each in its own Python 3.11 virtualenv, gives the probabilities this job's TensorFlow gives.

The venvs are made once from infra/serving/tf-*.txt, in the job's cache folder (SERVING_VENVS overrides), keyed
by the requirements' hash, so CI on the same machine reuses them. Where one cannot be made (no registry, no
Python 3.11) the tier fails with that reason: it never passes without having loaded the model.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import ROOT, make_image_tree, make_tar, run_job, train_args
from job.data import default_cache_dir

VERSIONS = {"2.20": "SageMaker TensorFlow Serving 2.20", "2.15": "Vertex AI tf2-cpu.2-15"}
VENVS = Path(os.environ.get("SERVING_VENVS") or default_cache_dir() / "serving-venvs")
# (preset, layout, extra flags): the seed network; the fast network with whitening and mirror TTA in its graph
# (SageMaker's 1/ layout); with mirror + translate TTA (Vertex's flat layout).
RUNS = [
    ("seed", "runs", []),
    ("fast", "sagemaker", []),
    ("fast", "vertex", ["--tta-translate"]),
]
TOLERANCE = 1e-5


def venv_python(version: str) -> Path:
    """A Python 3.11 venv with tensorflow-cpu `version` (made on first use)."""
    requirements = ROOT / "infra" / "serving" / f"tf-{version}.txt"
    root = VENVS / f"tf-{version}-{hashlib.sha256(requirements.read_bytes()).hexdigest()[:12]}"
    python = root / "bin" / "python"
    if (root / ".installed").is_file():
        return python
    base = shutil.which("python3.11") or sys.executable
    shutil.rmtree(root, ignore_errors=True)
    steps = [
        [base, "-m", "venv", str(root)],
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "-r",
            str(ROOT / "infra" / "serving" / f"tf-{version}.txt"),
        ],
    ]
    for step in steps:
        proc = subprocess.run(step, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            pytest.fail(f"cannot make the TensorFlow {version} venv ({' '.join(step[:3])}): {proc.stderr[-800:]}")
    (root / ".installed").write_text(version)
    return python


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One tiny run per (preset, layout), and 64 real-looking images."""
    base = tmp_path_factory.mktemp("serving")
    data = make_tar(make_image_tree(base / "tree", per_class=12), base / "tiny.tar.gz")
    runs = {}
    for preset, layout, extra in RUNS:
        name = f"{preset}-{layout}"
        out = base / name
        env = {"JOB_LAYOUT": layout}
        args = train_args(data, out, run_id=name, cache=base / "cache", preset=preset, width=8, epochs=1)
        proc = run_job(*args, *extra, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        folder = out / name if layout == "runs" else out
        saved = folder / {"runs": "saved_model", "sagemaker": "1", "vertex": "."}[layout]
        assert (saved / "saved_model.pb").is_file()
        runs[name] = saved
    images = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    np.save(base / "images.npy", images)
    return {"runs": runs, "images": base / "images.npy", "base": base}


def reference(saved: Path, images: Path) -> np.ndarray:
    import tensorflow as tf

    serve = tf.saved_model.load(str(saved)).signatures["serving_default"]
    return serve(image=tf.constant(np.load(images), tf.uint8))["probabilities"].numpy()


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_serving_images_load_each_export_and_agree(version, exported):
    python = venv_python(version)
    report = {}
    for name, saved in exported["runs"].items():
        out = exported["base"] / f"{name}-{version}.npy"
        proc = subprocess.run(
            [str(python), str(Path(__file__).parent / "serve.py"), str(saved), str(exported["images"]), str(out)],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
        assert proc.returncode == 0, f"TensorFlow {version} could not serve {name}: {proc.stderr[-2000:]}"
        assert proc.stdout.strip().splitlines()[-1].startswith(version)
        diff = float(np.abs(np.load(out) - reference(saved, exported["images"])).max())
        report[name] = diff
        assert diff <= TOLERANCE, f"{name}: TensorFlow {version} differs by {diff:.2e}"
    print(
        f"TensorFlow {version} ({VERSIONS[version]}): max |dp| "
        + json.dumps({k: f"{v:.1e}" for k, v in report.items()})
    )

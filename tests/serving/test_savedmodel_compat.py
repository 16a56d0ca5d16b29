"""The serving-compatibility tier (`make test-serving`): each preset's SavedModel, in the layout each platform
serves it from, loaded by the TensorFlow versions of today's serving images (SageMaker TF Serving 2.20, Vertex
AI tf2-cpu.2-15), each in its own Python 3.11 virtualenv, gives the probabilities this job's TensorFlow gives.

The venvs come from infra/serving/tf-*.txt (tests/serving/venvs.py). Where one cannot be made (no registry, no
Python 3.11) the tier fails with that reason: it never passes without having loaded the model.
"""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from venvs import compat_venv

from helpers import ROOT, make_image_tree, make_tar, run_job, train_args

VERSIONS = {"2.20": "SageMaker TensorFlow Serving 2.20", "2.15": "Vertex AI tf2-cpu.2-15"}
# (preset, layout, extra flags): the seed network; the fast network with whitening and mirror TTA in its graph
# (SageMaker's 1/ layout); with mirror + translate TTA (Vertex's flat layout).
RUNS = [
    ("seed", "runs", []),
    ("fast", "sagemaker", []),
    ("fast", "vertex", ["--tta-level", "2"]),
]
TOLERANCE = 1e-5


def venv_python(version: str) -> Path:
    return compat_venv(ROOT / "infra" / "serving" / f"tf-{version}.txt")


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

"""The end-to-end run and checkpoints seen from inside TensorFlow: these tests import Keras in the test process,
so they live in this tier (the end-to-end tier forks the CLI from a process that must stay free of TensorFlow)."""

import subprocess
import sys

import numpy as np
from no_tensorflow import PRELUDE as NO_TENSORFLOW

from helpers import ROOT

ONNX_ONLY = (
    NO_TENSORFLOW
    + """
from pathlib import Path
import numpy as np
from job.predict import load_session
session, class_names = load_session(Path(sys.argv[1]))
np.save(sys.argv[3], session.run(["probabilities"], {"image": np.load(sys.argv[2])})[0])
print(class_names[0])
"""
)


def test_onnx_alone_without_tensorflow_predicts_what_keras_predicts(trained_run, tmp_path):
    import keras

    run = trained_run["dir"]
    x = np.random.default_rng(1).integers(0, 256, (33, 32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "x.npy", x)
    proc = subprocess.run(
        [sys.executable, "-c", ONNX_ONLY, str(run / "model.onnx"), str(tmp_path / "x.npy"), str(tmp_path / "p.npy")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "airplane"
    model = keras.models.load_model(run / "model.keras")
    expected = model.predict(x.astype(np.float32) / 255.0, verbose=0)
    onnx_probs = np.load(tmp_path / "p.npy")
    assert np.abs(onnx_probs - expected).max() <= 1e-5
    assert (onnx_probs.argmax(1) == expected.argmax(1)).all()


def test_checkpoint_round_trip_through_s3(bucket, s3_env):
    import numpy as np

    from job import config
    from job.train.build import compile_model
    from job.train.checkpoint import Checkpoints

    cfg = config.resolve({"run_id": "ck-1"}, env={})
    model = compile_model(cfg.training, 10, np.zeros((100, 32, 32, 3), np.uint8))
    fp = {"any": "fingerprint"}
    store = Checkpoints(f"s3://{bucket}/checkpoints", "ck-1")
    assert store.load(fp, epochs=3) is None
    store.save(model, fp, epoch=2, step=5, history=[{"epoch": 1}, {"epoch": 2}])
    store.save(model, fp, epoch=3, step=0, history=[{"epoch": 1}, {"epoch": 2}, {"epoch": 3}])
    from job.storage.s3client import make_client

    keys = [o["Key"] for o in make_client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert sorted(keys) == ["checkpoints/ck-1/model-e0003-s000000.keras", "checkpoints/ck-1/state.json"]
    state = Checkpoints(f"s3://{bucket}/checkpoints", "ck-1").load(fp, epochs=3)
    assert (state.epoch, state.step, len(state.history)) == (3, 0, 3)
    for a, b in zip(model.get_weights(), state.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)

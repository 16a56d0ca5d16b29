"""A checkpoint the run cannot resume is refused right after the data stage, before TensorFlow starts: this tier
cannot import TensorFlow (tests/unit/conftest.py), so each refusal here proves it needs none."""

import json

import numpy as np
import pytest

from job import config, stages
from job.data.dataset import Splits
from job.errors import CheckpointError
from job.train.checkpoint import Checkpoints, fingerprint

MODEL = "model-e0001-s000000.keras"


def _splits() -> Splits:
    x, y = np.zeros((4, 32, 32, 3), np.uint8), np.arange(4) % 2
    return Splits(x, y, x[:0], y[:0], x, y, ["a", "b"], {"source_sha256": "abc", "sizes": {"train": 4}})


def _written(tmp_path, training, **change) -> Checkpoints:
    state = {"epoch": 1, "step": 0, "history": [], "model_file": MODEL, "model_sha256": "0" * 64}
    state["fingerprint"] = json.loads(json.dumps(fingerprint(training, _splits())))
    (tmp_path / "ck" / "r1").mkdir(parents=True)
    (tmp_path / "ck" / "r1" / "state.json").write_text(json.dumps({**state, **change}))
    return Checkpoints(str(tmp_path / "ck"), "r1")


@pytest.mark.parametrize(
    "change,says",
    [
        ({"fingerprint": {"width": 1}}, "different configuration"),
        ({"epoch": 5}, "beyond this run's --epochs 3"),
        ({"epoch": 3, "step": 2}, "beyond this run's --epochs 3"),
        ({"model_file": "../x.keras"}, "not a model file of this checkpoint folder"),
        ({"epoch": "abc"}, "malformed"),
    ],
)
def test_a_checkpoint_this_run_cannot_resume_is_refused_without_tensorflow(tmp_path, change, says):
    training = config.resolve({"preset": "fast", "run_id": "r1", "epochs": 3}, env={}).training
    with pytest.raises(CheckpointError, match=says):
        stages.resumable(_written(tmp_path, training, **change), training, _splits())


def test_a_checkpoint_this_run_can_resume_passes_the_check(tmp_path):
    training = config.resolve({"preset": "fast", "run_id": "r1", "epochs": 3}, env={}).training
    stages.resumable(_written(tmp_path, training), training, _splits())  # the model file is loaded later, with Keras

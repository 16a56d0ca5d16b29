"""The shared epoch loop's preemption rule (job.train.epochs), on real Keras training in this process: SIGTERM
during an epoch's last step completes that epoch (recorded; the checkpoint is at the next epoch's step 0), during
an earlier step the checkpoint is at that step; either way the run stops with Preempted, the SIGTERM handler is
restored, and the resumed run trains exactly the optimizer steps of an uninterrupted one."""

import json
import os
import signal

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from job import config  # noqa: E402
from job.data.dataset import Splits  # noqa: E402
from job.errors import Preempted  # noqa: E402
from job.train.checkpoint import Checkpoints  # noqa: E402
from job.train.loop import train  # noqa: E402

IMAGES, BATCH, EPOCHS = 40, 8, 2  # 5 steps per epoch
STEPS = IMAGES // BATCH


class SigtermAt(keras.callbacks.Callback):
    """Sends this process SIGTERM as batch `batch` (0-based) of the first epoch starts: that step is the last."""

    def __init__(self, batch: int):
        super().__init__()
        self.batch, self.sent = batch, False

    def on_train_batch_begin(self, batch, logs=None):
        if batch == self.batch and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)


def _splits() -> Splits:
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (IMAGES, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, IMAGES)
    empty_x, empty_y = np.zeros((0, 32, 32, 3), np.uint8), np.zeros(0, np.int64)
    info = {"source_sha256": "0" * 64, "sizes": {"train": IMAGES, "val": 0, "test": 0}}
    return Splits(x, y, empty_x, empty_y, empty_x, empty_y, [str(c) for c in range(10)], info)


@pytest.mark.parametrize("batch, stopped_at", [(STEPS - 1, (1, 0)), (2, (0, 3))], ids=["last-step", "mid-epoch"])
def test_sigterm_checkpoints_the_step_reached_and_the_resumed_run_repeats_none(tmp_path, batch, stopped_at):
    training = config.resolve(
        {"preset": "fast", "width": 8, "batch_size": BATCH, "epochs": EPOCHS, "run_id": "pt-1"}, env={}
    ).training
    splits, before = _splits(), signal.getsignal(signal.SIGTERM)
    with pytest.raises(Preempted, match=f"step {stopped_at[1]} of {STEPS}.*--run-id {training.run_id}"):
        train(training, splits, Checkpoints(str(tmp_path), training.run_id), extra_callbacks=[SigtermAt(batch)])
    assert signal.getsignal(signal.SIGTERM) == before
    state = json.loads((tmp_path / training.run_id / "state.json").read_text())
    assert (state["epoch"], state["step"]) == stopped_at
    assert [r["epoch"] for r in state["history"]] == list(range(1, stopped_at[0] + 1))

    resumed = train(training, splits, Checkpoints(str(tmp_path), training.run_id))
    assert (resumed.resumed_from["epoch"], resumed.resumed_from["step"]) == stopped_at
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    assert int(resumed.model.optimizer.iterations.numpy()) == EPOCHS * STEPS


def test_sigterm_without_a_checkpoint_dir_stops_with_nothing_to_resume():
    training = config.resolve(
        {"preset": "fast", "width": 8, "batch_size": BATCH, "epochs": EPOCHS, "run_id": "pt-1"}, env={}
    ).training
    with pytest.raises(Preempted, match="no --checkpoint-dir was set"):
        train(training, _splits(), None, extra_callbacks=[SigtermAt(1)])

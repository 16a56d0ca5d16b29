"""Single-worker training: one Keras `fit` per epoch inside the shared epoch loop (job.train.epochs), resumed
from a job.train.checkpoint checkpoint when there is one; a multi-worker `strategy` hands over to
job.train.distributed.

`fit` is called once per epoch (initial_epoch=e, epochs=e+1) so that the data order and the augmentation of
epoch e depend only on (seed, e): a run stopped by SIGTERM in the middle of an epoch resumes by skipping exactly
the batches it had already trained on.
"""

import functools
import sys

import keras

from job.config.parts import TrainConfig
from job.train.build import compile_model, in_precision
from job.train.callbacks import ProgressBar, StopOnSignal
from job.train.checkpoint import fingerprint
from job.train.epochs import Plan, Saver, Start, TrainResult, run_epochs
from job.train.input import make_dataset, training_dataset
from job.train.optim import steps_per_epoch
from job.train.tensorboard import GuardedTensorBoard


def train(training: TrainConfig, splits, checkpoints=None, extra_callbacks=(), strategy=None) -> TrainResult:
    """Train training.model on splits.train (splits.val for the curves); resume from `checkpoints` if any.
    With a multi-worker `strategy` the custom loop of job.train.distributed runs instead of `fit`."""
    if strategy is not None:
        from job.train.distributed import train_multi_worker

        return train_multi_worker(training, splits, strategy, checkpoints)
    fp = fingerprint(training, splits)
    start = _start(training, splits, checkpoints.load(fp, training.optim.epochs) if checkpoints else None)
    optim = training.optim
    plan = Plan(training.run_id, optim.epochs, steps_per_epoch(len(splits.y_train), optim.batch_size, optim.drop_last))
    saver = Saver(checkpoints.location, functools.partial(checkpoints.save, start.net, fp)) if checkpoints else None
    return run_epochs(FitEpochs(training, splits, start.net, plan.steps, extra_callbacks), start, plan, saver)


def _start(training: TrainConfig, splits, state) -> Start:
    """A new model, or the checkpoint's (`state`, job.train.checkpoint.State) in this machine's precision."""
    if state is None:
        return Start(compile_model(training, splits.num_classes, splits.x_train))
    net = in_precision(state.model, training, splits.num_classes, splits.x_train)
    return Start(net, list(state.history), state.epoch, state.step, state.info)


class FitEpochs:
    """One `fit` per epoch; StopOnSignal ends it after the step in which SIGTERM came (epochs.EpochTrainer)."""

    def __init__(self, training: TrainConfig, splits, net: keras.Model, steps: int, extra_callbacks=()):
        batch_size = training.optim.batch_size
        self.net, self.splits, self.spec, self.batch_size = net, splits, training.inputs, batch_size
        self.stop = StopOnSignal()
        self.callbacks: list = [self.stop, *extra_callbacks]
        if training.log_dir:
            self.callbacks.append(GuardedTensorBoard(log_dir=training.log_dir, update_freq="epoch"))
        if sys.stderr.isatty():
            self.callbacks.append(ProgressBar(training.optim.epochs, steps))
        # No validation split (--val-fraction 0): the curves are the training metrics alone.
        self.val_ds = (
            make_dataset(splits.x_val, splits.y_val, splits.num_classes, max(batch_size, 256))
            if len(splits.y_val)
            else None
        )
        self.history: dict = {}

    def fit(self, epoch: int, skip: int) -> tuple[int, bool]:
        train_ds = training_dataset(self.spec, self.splits, epoch, self.batch_size, skip_batches=skip)
        fit = self.net.fit(
            train_ds,
            validation_data=self.val_ds,
            initial_epoch=epoch,
            epochs=epoch + 1,
            verbose=0,
            callbacks=self.callbacks,
            shuffle=False,
        )
        self.history = fit.history
        return self.stop.steps_done, self.stop.requested

    def logs(self) -> dict:
        return self.history

    def reported(self, record: dict) -> None:
        """The TensorBoard callback has written the epoch already."""

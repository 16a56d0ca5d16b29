"""The epoch loop: train, checkpoint every epoch, stop cleanly on SIGTERM, resume exactly where it stopped.

`fit` is called once per epoch (initial_epoch=e, epochs=e+1) so that the data order and the augmentation
of epoch e depend only on (seed, e): a run stopped by SIGTERM in the middle of an epoch saves a checkpoint
(model + optimizer state, epoch, step, history) and, started again with the same run id and checkpoint
dir, skips exactly the batches it had already trained on.
"""

import logging
import signal
import sys
import time
from dataclasses import dataclass, field

import keras

from job.config import Config
from job.errors import CheckpointError, Preempted
from job.train.build import compile_model, in_precision
from job.train.callbacks import ProgressBar, StopOnSignal, epoch_record, report_epoch
from job.train.checkpoint import fingerprint
from job.train.input import InputSpec, make_dataset, training_dataset
from job.train.optim import steps_per_epoch

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    model: keras.Model
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from: dict | None = None


def train(cfg: Config, splits, checkpoints=None, extra_callbacks=(), strategy=None) -> TrainResult:
    """Train cfg.model on splits.train (splits.val for the curves); resume from `checkpoints` if any.
    With a multi-worker `strategy` the custom loop of job.train.distributed runs instead of `fit`."""
    if strategy is not None:
        from job.train.distributed import train_multi_worker

        return TrainResult(*train_multi_worker(cfg, splits, strategy, checkpoints))

    num_classes = splits.num_classes
    state = checkpoints.load(fingerprint(cfg, splits)) if checkpoints else None
    if state:
        net, history = in_precision(state.model, cfg, num_classes, splits.x_train), list(state.history)
        start_epoch, skip = state.epoch, state.step
        if start_epoch > cfg.epochs or (start_epoch == cfg.epochs and skip):
            raise CheckpointError(
                f"checkpoint {state.info['location']} is at epoch {start_epoch + 1}, step {skip}, beyond this run's "
                f"--epochs {cfg.epochs}; use another --run-id or --checkpoint-dir"
            )
        log.info("resuming run %s at epoch %d, step %d", cfg.run_id, start_epoch + 1, skip)
    else:
        net, history, start_epoch, skip = compile_model(cfg, num_classes, splits.x_train), [], 0, 0

    stopper = StopOnSignal()
    callbacks: list = [stopper, *extra_callbacks]
    if cfg.log_dir:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=cfg.log_dir, update_freq="epoch"))
    # No validation split (--val-fraction 0): the curves are the training metrics alone.
    val_ds = (
        make_dataset(splits.x_val, splits.y_val, num_classes, max(cfg.batch_size, 256)) if len(splits.y_val) else None
    )
    steps = steps_per_epoch(len(splits.y_train), cfg.batch_size, cfg.drop_last)
    if sys.stderr.isatty():
        callbacks.append(ProgressBar(cfg.epochs, steps))
    previous = signal.signal(signal.SIGTERM, lambda *_: setattr(stopper, "requested", True))
    started = time.perf_counter()
    try:
        for epoch in range(start_epoch, cfg.epochs):
            train_ds = training_dataset(InputSpec.of(cfg), splits, epoch, cfg.batch_size, skip_batches=skip)
            t0 = time.perf_counter()
            fit = net.fit(
                train_ds,
                validation_data=val_ds,
                initial_epoch=epoch,
                epochs=epoch + 1,
                verbose=0,
                callbacks=callbacks,
                shuffle=False,
            )
            if stopper.requested:
                step = skip + stopper.steps_done
                if step >= steps:  # the signal came during the last step: the epoch is complete
                    history.append(epoch_record(epoch, fit.history, time.perf_counter() - t0, net))
                    report_epoch(history[-1], cfg.epochs)
                    epoch, step = epoch + 1, 0
                if checkpoints:
                    checkpoints.save(net, fingerprint(cfg, splits), epoch=epoch, step=step, history=history)
                    raise Preempted(
                        f"stopped by SIGTERM at epoch {epoch + 1}, step {step}; checkpoint saved to "
                        f"{checkpoints.location}; start again with --run-id {cfg.run_id} to resume"
                    )
                raise Preempted("stopped by SIGTERM; no --checkpoint-dir was set, so the run cannot resume")
            history.append(epoch_record(epoch, fit.history, time.perf_counter() - t0, net))
            report_epoch(history[-1], cfg.epochs)
            skip = 0
            if checkpoints:
                checkpoints.save(net, fingerprint(cfg, splits), epoch=epoch + 1, step=0, history=history)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return TrainResult(net, history, time.perf_counter() - started, state.info if state else None)

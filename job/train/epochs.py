"""The epoch loop both trainers share: job.train.loop (one Keras `fit` per epoch) and job.train.distributed (the
multi-worker custom step) differ only in how they train one epoch; where a run starts, the epoch records, the
checkpoint after every epoch and preemption are this module's.

Preemption: SIGTERM only raises a flag (`trainer.stop.requested`); the trainer finishes the step it is in and
says it stopped. The loop records the epoch if that was its last step, saves a checkpoint at the exact (epoch,
step) reached and raises Preempted (exit 143). Started again with the same run id and checkpoint dir, the run
resumes at that step: the data order and augmentation of epoch e depend only on (seed, e), so skipping the
batches already trained gives exactly the optimizer steps of an uninterrupted run.
"""

import contextlib
import logging
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import keras

from job.errors import Preempted
from job.train.callbacks import epoch_record, report_epoch
from job.train.checkpoint import check_position

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    model: keras.Model
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from: dict | None = None


@dataclass
class Start:
    """A new model at epoch 0, or a checkpoint's model, history and position."""

    net: keras.Model
    history: list[dict] = field(default_factory=list)
    epoch: int = 0
    step: int = 0  # the steps of `epoch` already trained
    resumed_from: dict | None = None  # {"location", "epoch", "step"} of the checkpoint resumed


@dataclass(frozen=True)
class Plan:
    run_id: str
    epochs: int
    steps: int  # per epoch
    cluster: bool = False  # every worker of a multi-worker run stops after the same step


@dataclass(frozen=True)
class Saver:
    """Where the loop's checkpoints go: `save(epoch=, step=, history=)` writes one to `location`."""

    location: str
    save: Callable[..., None]


class StopFlag:
    requested = False


class EpochTrainer(Protocol):
    net: keras.Model
    stop: StopFlag  # or anything with `requested`: set by the SIGTERM handler

    def fit(self, epoch: int, skip: int) -> tuple[int, bool]:
        """Train epoch `epoch` from its batch `skip`; the steps trained, and whether a stop was requested."""

    def logs(self) -> dict[str, list[float]]:
        """The finished epoch's metrics, shaped like Keras' History.history."""

    def reported(self, record: dict) -> None:
        """The epoch's record, after report_epoch (e.g. for TensorBoard)."""


def run_epochs(trainer: EpochTrainer, start: Start, plan: Plan, saver: Saver | None) -> TrainResult:
    _check_resumable(start, plan)
    history, skip = list(start.history), start.step
    started = time.perf_counter()
    with _sigterm_sets(trainer.stop):
        for epoch in range(start.epoch, plan.epochs):
            t0 = time.perf_counter()
            steps, stopped = trainer.fit(epoch, skip)
            at_epoch, at_step = epoch, skip + steps
            if not stopped or at_step >= plan.steps:  # a signal during the last step: the epoch is complete
                history.append(epoch_record(epoch, trainer.logs(), time.perf_counter() - t0, trainer.net))
                report_epoch(history[-1], plan.epochs)
                trainer.reported(history[-1])
                at_epoch, at_step = epoch + 1, 0
            if saver:
                saver.save(epoch=at_epoch, step=at_step, history=history)
            if stopped:
                raise _preempted(plan, at_epoch, at_step, saver)
            skip = 0
    return TrainResult(trainer.net, history, time.perf_counter() - started, start.resumed_from)


def _check_resumable(start: Start, plan: Plan) -> None:
    if not start.resumed_from:
        return
    check_position(start.resumed_from["location"], start.epoch, start.step, plan.epochs)
    log.info("resuming run %s at epoch %d, step %d", plan.run_id, start.epoch + 1, start.step)


@contextlib.contextmanager
def _sigterm_sets(stop) -> Iterator[None]:
    previous = signal.signal(signal.SIGTERM, lambda *_: setattr(stop, "requested", True))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _preempted(plan: Plan, epoch: int, step: int, saver: Saver | None) -> Preempted:
    if saver is None:
        return Preempted("stopped by SIGTERM; no --checkpoint-dir was set, so the run cannot resume")
    who, again = (" (all workers)", "the workers again") if plan.cluster else ("", "again")
    return Preempted(
        f"stopped by SIGTERM at epoch {epoch + 1}, step {step} of {plan.steps}{who}; checkpoint saved to "
        f"{saver.location}; start {again} with --run-id {plan.run_id} to resume"
    )

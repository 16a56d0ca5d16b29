"""What the epoch loop observes and reports: a SIGTERM request (finish the step, then stop), progress for
people on stderr, the `epoch` event on stdout, and the per-epoch record that becomes history.csv."""

import contextlib
import sys

import keras

from job.runtime import hptuning
from job.runtime.events import emit


class StopOnSignal(keras.callbacks.Callback):
    """Finishes the running step, then stops fit; counts the steps done in this epoch."""

    def __init__(self):
        super().__init__()
        self.requested = False
        self.steps_done = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.steps_done = 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps_done += 1
        if self.requested:
            self.model.stop_training = True


class ProgressBar(keras.callbacks.Callback):
    """Keras' own progress output would say "Epoch 3/3" with one fit() per epoch, on stdout: a bar on stderr
    instead, when stderr is a terminal. The per-epoch line comes from report_epoch either way."""

    def __init__(self, epochs: int, steps: int):
        super().__init__()
        self.epochs, self.steps, self.bar = epochs, steps, None

    def on_epoch_begin(self, epoch, logs=None):
        print(f"Epoch {epoch + 1}/{self.epochs}", file=sys.stderr, flush=True)
        self.bar = keras.utils.Progbar(self.steps, stateful_metrics=["loss", "accuracy"])

    def on_train_batch_end(self, batch, logs=None):
        with contextlib.redirect_stdout(sys.stderr):
            self.bar.update(batch + 1, [(k, float(v)) for k, v in (logs or {}).items()])


def report_epoch(record: dict, epochs: int) -> None:
    """One line for people on stderr (the format MetricDefinitions in infra/aws parse), one `epoch` event."""
    metrics = " - ".join(f"{k}: {v:.4f}" for k, v in record.items() if k not in ("epoch", "seconds", "learning_rate"))
    print(f"Epoch {record['epoch']}/{epochs} - {record['seconds']:.1f}s - {metrics}", file=sys.stderr, flush=True)
    emit("epoch", epochs=epochs, **record)
    hptuning.report(record)


def epoch_record(epoch: int, logs: dict, seconds: float, net: keras.Model) -> dict:
    record = {"epoch": epoch + 1, "seconds": round(seconds, 3)}
    for key, values in logs.items():
        record[key] = float(values[-1])
    # Keras evaluates a schedule at the current step here; a variable may be mirrored across workers.
    record["learning_rate"] = float(keras.ops.convert_to_numpy(net.optimizer.learning_rate))
    return record

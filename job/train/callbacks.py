"""What the epoch loop observes and reports: a SIGTERM request (finish the step, then stop), progress for
people on stderr, the `epoch` event on stdout, and the per-epoch record that becomes history.csv."""

import contextlib
import sys
import time

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


def metrics_line(record: dict, now: float | None = None) -> str:
    """The epoch's metrics as `<RFC 3339 UTC time> epoch=N name=value ...`, at full precision (the values of
    history.csv): the form Katib's default StdOut collector reads (its regex takes `name=value` pairs, and a leading
    RFC 3339 time becomes the observation's timestamp) and the SageMaker tuning job's MetricDefinitions match."""
    now = time.time() if now is None else now
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
    pairs = " ".join(f"{k}={float(v)!r}" for k, v in record.items() if k not in ("epoch", "seconds", "learning_rate"))
    return f"{stamp} epoch={record['epoch']} {pairs}"


def report_epoch(record: dict, epochs: int) -> None:
    """Two lines for people and log scrapers on stderr: `Epoch N/M - ...` (what the training job's MetricDefinitions
    in infra/aws parse) and metrics_line (Katib, the SageMaker tuning job); one `epoch` event on stdout."""
    metrics = " - ".join(f"{k}: {v:.4f}" for k, v in record.items() if k not in ("epoch", "seconds", "learning_rate"))
    print(f"Epoch {record['epoch']}/{epochs} - {record['seconds']:.1f}s - {metrics}", file=sys.stderr, flush=True)
    print(metrics_line(record), file=sys.stderr, flush=True)
    emit("epoch", epochs=epochs, **record)
    hptuning.report(record)


def epoch_record(epoch: int, logs: dict, seconds: float, net: keras.Model) -> dict:
    record = {"epoch": epoch + 1, "seconds": round(seconds, 3)}
    for key, values in logs.items():
        record[key] = float(values[-1])
    # Keras evaluates a schedule at the current step here; a variable may be mirrored across workers.
    record["learning_rate"] = float(keras.ops.convert_to_numpy(net.optimizer.learning_rate))
    return record

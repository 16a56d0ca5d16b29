"""What the epoch loop observes: a SIGTERM request (finish the step, then stop), human progress on stderr,
and the per-epoch record that becomes history.csv."""

import time

import keras


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


class EpochLogger(keras.callbacks.Callback):
    """Keras' own progress output would say "Epoch 3/3" with one fit() per epoch: a progress bar on a
    terminal, one line per epoch otherwise (CI, container logs)."""

    def __init__(self, epochs: int, steps: int, interactive: bool):
        super().__init__()
        self.epochs, self.steps, self.interactive = epochs, steps, interactive
        self.bar, self.t0, self.epoch = None, 0.0, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.t0 = epoch, time.perf_counter()
        if self.interactive:
            print(f"Epoch {epoch + 1}/{self.epochs}", flush=True)
            self.bar = keras.utils.Progbar(self.steps, stateful_metrics=["loss", "accuracy"])

    def on_train_batch_end(self, batch, logs=None):
        if self.bar is not None:
            self.bar.update(batch + 1, [(k, float(v)) for k, v in (logs or {}).items()])

    def on_epoch_end(self, epoch, logs=None):
        metrics = " - ".join(f"{k}: {float(v):.4f}" for k, v in (logs or {}).items() if k != "learning_rate")
        print(f"Epoch {epoch + 1}/{self.epochs} - {time.perf_counter() - self.t0:.1f}s - {metrics}", flush=True)


def epoch_record(epoch: int, logs: dict, seconds: float, net: keras.Model) -> dict:
    record = {"epoch": epoch + 1, "seconds": round(seconds, 3)}
    for key, values in logs.items():
        record[key] = float(values[-1])
    # Keras evaluates a schedule at the current step here; a variable may be mirrored across workers.
    record["learning_rate"] = float(keras.ops.convert_to_numpy(net.optimizer.learning_rate))
    return record

"""TensorBoard, written so that it never fails a training: Keras' TensorBoard callback (the single-worker loop) and
the multi-worker loop's scalars, laid out as that callback lays them out: `<log_dir>/train` and
`<log_dir>/validation`, `epoch_<metric>`.

The folder is probed before any data is read (job.report.outputs). One that breaks afterwards (made a file,
turned read-only, its disk full) raises TensorFlow errors from inside the callback: the first one is a warning
and an `output_failed` event, TensorBoard stops, and the training goes on to publish with its own exit code.
"""

import functools
import logging
import re
from pathlib import Path

import keras
import tensorflow as tf

from job.gates.text import shown
from job.runtime.events import emit

log = logging.getLogger("job")

_SKIP = ("epoch", "seconds")
_TF_NOISE = re.compile(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\].*$")  # TensorFlow's op decorations
_HOOKS = tuple(name for name in dir(keras.callbacks.Callback) if name.startswith("on_")) + ("set_model",)


def tensorboard_failed(log_dir: str, exc: BaseException) -> None:
    """The one warning and `output_failed` event of a TensorBoard folder that broke after the probe."""
    reason = shown(_TF_NOISE.sub("", (str(exc).splitlines() or [""])[0]) or type(exc).__name__, 200)
    log.warning(
        "TensorBoard log folder %s could not be written (%s); TensorBoard stops, the run's outcome is unchanged",
        shown(str(log_dir)),
        reason,
    )
    emit("output_failed", output="TensorBoard", reason=f"{shown(str(log_dir))}: {reason}")


def _guarded(hook):
    @functools.wraps(hook)
    def call(self, *args, **kwargs):
        if self.broken:
            return None
        try:
            return hook(self, *args, **kwargs)
        except Exception as exc:  # tf.errors.OpError, OSError: whatever the folder's file system answers
            self.broken = True
            tensorboard_failed(self.log_dir, exc)
            return None

    return call


class GuardedTensorBoard(keras.callbacks.TensorBoard):
    """keras.callbacks.TensorBoard whose every hook turns a failure into one warning, then does nothing."""

    broken = False


for _name in _HOOKS:
    setattr(GuardedTensorBoard, _name, _guarded(getattr(keras.callbacks.TensorBoard, _name)))


class EpochSummaries:
    """The multi-worker loop's epoch scalars; a failure is reported once and ends TensorBoard, not the run."""

    def __init__(self, log_dir: str):
        self.log_dir, self.writers = log_dir, {}
        if log_dir:
            self._guard(lambda: self.writers.update(_writers(log_dir)))

    def write(self, record: dict) -> None:
        if self.writers:
            self._guard(lambda: self._write(record))

    def _guard(self, action) -> None:
        try:
            action()
        except Exception as exc:  # as in GuardedTensorBoard
            self.writers = {}
            tensorboard_failed(self.log_dir, exc)

    def _write(self, record: dict) -> None:
        for key, value in record.items():
            if key in _SKIP:
                continue
            split, metric = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            with self.writers[split].as_default():
                tf.summary.scalar(f"epoch_{metric}", value, step=record["epoch"])
        for writer in self.writers.values():
            writer.flush()


def _writers(log_dir: str) -> dict:
    return {name: tf.summary.create_file_writer(str(Path(log_dir) / name)) for name in ("train", "validation")}

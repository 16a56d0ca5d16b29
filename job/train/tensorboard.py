"""TensorBoard scalars from the multi-worker loop, laid out as Keras' TensorBoard callback lays them out (the
single-worker loop uses that callback): `<log_dir>/train` and `<log_dir>/validation`, `epoch_<metric>`."""

from pathlib import Path

import tensorflow as tf

_SKIP = ("epoch", "seconds")


class EpochSummaries:
    def __init__(self, log_dir: str):
        self.writers = (
            {name: tf.summary.create_file_writer(str(Path(log_dir) / name)) for name in ("train", "validation")}
            if log_dir
            else {}
        )

    def write(self, record: dict) -> None:
        if not self.writers:
            return
        for key, value in record.items():
            if key in _SKIP:
                continue
            split, metric = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            with self.writers[split].as_default():
                tf.summary.scalar(f"epoch_{metric}", value, step=record["epoch"])
        for writer in self.writers.values():
            writer.flush()

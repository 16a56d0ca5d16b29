"""Synchronous multi-worker training (TF_CONFIG with several workers).

Keras 3's `fit` does not run under tf.distribute.MultiWorkerMirroredStrategy (keras-team/keras#20585:
PerReplica values reach the training step unconverted), so multi-worker runs use this small custom
loop: each replica computes its share of the global-batch loss, the Keras optimizer all-reduces
(sums) the gradients across workers and applies the same update everywhere. The data pipeline is the
single-worker one (same order and augmentation for a given seed and epoch), sharded by tf.distribute.

Limits: no mid-run checkpoint/resume across workers (a preempted multi-worker job restarts from the
start; the platform restarts its pods) and no SIGTERM hand-off.
"""

import logging
import time

import keras
import numpy as np
import tensorflow as tf

from job.report.metrics import cross_entropy
from job.train.build import compile_model
from job.train.callbacks import epoch_record
from job.train.input import training_dataset

log = logging.getLogger(__name__)


def make_strategy() -> tf.distribute.Strategy:
    """Call before any other TensorFlow op: the strategy starts the collective ops server."""
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    log.info("multi-worker training: %d replicas in sync", strategy.num_replicas_in_sync)
    return strategy


def train_multi_worker(cfg, splits, strategy):
    num_classes = splits.num_classes
    with strategy.scope():
        net = compile_model(cfg, num_classes, splits.x_train)
    per_example_loss = keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing, reduction=None)
    global_batch = cfg.batch_size

    @tf.function
    def train_step(images, labels):
        def replica_step(x, y):
            with tf.GradientTape() as tape:
                probs = net(x, training=True)
                loss = tf.nn.compute_average_loss(per_example_loss(y, probs), global_batch_size=global_batch)
            grads = tape.gradient(loss, net.trainable_variables)
            net.optimizer.apply_gradients(zip(grads, net.trainable_variables, strict=True))
            correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(y, 1), tf.argmax(probs, 1)), tf.float32))
            return loss, correct

        loss, correct = strategy.run(replica_step, args=(images, labels))
        return (
            strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None),
            strategy.reduce(tf.distribute.ReduceOp.SUM, correct, axis=None),
        )

    history = []
    started = time.perf_counter()
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        ds = training_dataset(cfg, splits, epoch, global_batch)
        total_loss, total_correct, steps = 0.0, 0.0, 0
        for images, labels in strategy.experimental_distribute_dataset(ds):
            loss, correct = train_step(images, labels)
            total_loss, total_correct, steps = total_loss + float(loss), total_correct + float(correct), steps + 1
        # Validation needs no collectives: every worker holds the same weights.
        val_probs = _local_predict(net, splits.x_val)
        logs = {
            "accuracy": [total_correct / len(splits.y_train)],
            "loss": [total_loss / max(steps, 1)],
            "val_accuracy": [float(np.mean(val_probs.argmax(1) == splits.y_val))],
            "val_loss": [cross_entropy(val_probs, splits.y_val)],
        }
        history.append(epoch_record(epoch, logs, time.perf_counter() - t0, net))
        print(
            f"Epoch {epoch + 1}/{cfg.epochs} - {time.perf_counter() - t0:.1f}s - "
            + " - ".join(f"{k}: {v[0]:.4f}" for k, v in logs.items()),
            flush=True,
        )
    return net, history, time.perf_counter() - started


def _local_predict(net, images: np.ndarray, batch: int = 512) -> np.ndarray:
    out = [
        net(tf.constant(images[i : i + batch], tf.float32) / 255.0, training=False).numpy()
        for i in range(0, len(images), batch)
    ]
    return np.concatenate(out)

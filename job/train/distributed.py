"""Synchronous multi-worker training (a cluster in TF_CONFIG, or SageMaker's hosts): checkpointed, preemptible.

Keras 3's `fit` does not run under tf.distribute.MultiWorkerMirroredStrategy (keras-team/keras#20585:
PerReplica values reach the training step unconverted), so multi-worker runs use this small custom loop: each
replica computes its share of the global-batch loss, the Keras optimizer all-reduces (sums) the gradients across
workers and applies the same update everywhere. The data pipeline is the single-worker one (same order and
augmentation for a given seed and epoch), sharded by tf.distribute.

Checkpoints (with --checkpoint-dir) are TensorFlow's own: a tf.train.Checkpoint of the model, the optimizer
(its step counter included), the history and the config fingerprint, saved by every worker at the end of every
epoch through a tf.train.CheckpointManager (the chief into `<checkpoint-dir>/<run-id>/multiworker`, the others
into scratch folders they delete, as MultiWorkerMirroredStrategy requires), and read back by all of them.

Preemption: a worker that receives SIGTERM only raises a flag; every step all-reduces the workers' flags along
with the loss, so all of them see it after the same step, save the same checkpoint and exit 143 together. The
platform restarts them; they restore the checkpoint, skip the batches already trained, and the run ends with
exactly the optimizer steps of an uninterrupted one. (TensorFlow's PreemptionCheckpointHandler does the same
through the coordination service; the flag in the step needs nothing beyond the all-reduce the step already
does.)
"""

import json
import logging
import shutil
import signal
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from job.config import Config
from job.errors import CheckpointError, Preempted
from job.gates.json_doc import load_json
from job.train.build import compile_model
from job.train.callbacks import epoch_record, report_epoch
from job.train.checkpoint import fingerprint
from job.train.input import InputSpec, training_dataset
from job.train.loss import cross_entropy
from job.train.optim import steps_per_epoch
from job.train.tensorboard import EpochSummaries

log = logging.getLogger(__name__)


def make_strategy(tf_config: dict) -> tf.distribute.Strategy:
    """Call before any other TensorFlow op: the strategy starts the collective ops server. The cluster comes
    from the platform (TF_CONFIG as given, or derived from SageMaker's resource config)."""
    cluster = tf.train.ClusterSpec(tf_config["cluster"])
    task = tf_config.get("task", {})
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        cluster, task_type=task.get("type", "worker"), task_id=task.get("index", 0), rpc_layer="grpc"
    )
    strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    log.info("multi-worker training: %d replicas in sync", strategy.num_replicas_in_sync)
    return strategy


class ClusterCheckpoint:
    """The multi-worker checkpoint of one run; see the module docstring."""

    def __init__(self, location: str, net: keras.Model, strategy, fp: dict):
        self.dir = Path(location) / "multiworker"
        self.fp = fp
        self.history = tf.Variable("[]", dtype=tf.string, trainable=False)
        self.checkpoint = tf.train.Checkpoint(
            model=net,
            optimizer=net.optimizer,
            history=self.history,
            fingerprint=tf.Variable(json.dumps(fp, sort_keys=True)),
        )
        resolver = strategy.cluster_resolver
        self.is_chief = strategy.extended.should_checkpoint
        self.write_dir = self.dir if self.is_chief else self.dir.parent / f"multiworker-temp-{resolver.task_id}"
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(self.write_dir), max_to_keep=1)

    def restore(self) -> list[dict] | None:
        latest = tf.train.latest_checkpoint(str(self.dir))
        if latest is None:
            return None
        try:
            stored = tf.train.load_checkpoint(latest).get_tensor("fingerprint/.ATTRIBUTES/VARIABLE_VALUE")
            theirs = load_json(stored, "its fingerprint", error=CheckpointError, expect=dict)
        except (tf.errors.OpError, ValueError, CheckpointError) as exc:
            raise CheckpointError(f"checkpoint {self.dir} is corrupt ({exc}); delete it to start over") from None
        if theirs != json.loads(json.dumps(self.fp, sort_keys=True)):
            diff = sorted(k for k in set(self.fp) | set(theirs) if self.fp.get(k) != theirs.get(k))
            raise CheckpointError(
                f"checkpoint {self.dir} was written by a different configuration (differs in: "
                f"{', '.join(diff)}); use another --run-id or --checkpoint-dir"
            )
        self.checkpoint.restore(latest).assert_existing_objects_matched()
        history = load_json(  # NaN allowed: a diverged epoch's loss is recorded as NaN
            self.history.numpy(), f"checkpoint {self.dir}: history", error=CheckpointError, allow_nan=True, expect=list
        )
        if not all(isinstance(record, dict) for record in history):
            raise CheckpointError(f"checkpoint {self.dir}: history is not a list of epoch records; delete it")
        return history

    def save(self, history: list[dict]) -> None:
        self.history.assign(json.dumps(history))
        self.manager.save()
        if not self.is_chief:
            shutil.rmtree(self.write_dir, ignore_errors=True)
        log.info("checkpoint saved: %s (step %d)", self.dir, int(self.checkpoint.optimizer.iterations.numpy()))


def train_multi_worker(cfg: Config, splits, strategy, checkpoints=None):
    """Returns (model, history, seconds, resumed_from)."""
    with strategy.scope():
        net = compile_model(cfg, splits.num_classes, splits.x_train)
    per_example_loss = keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing, reduction=None)
    global_batch = cfg.batch_size
    per_epoch = steps_per_epoch(len(splits.y_train), global_batch, cfg.drop_last)

    @tf.function
    def train_step(images, labels, stop_requested):
        def replica_step(x, y):
            with tf.GradientTape() as tape:
                probs = net(x, training=True)
                loss = tf.nn.compute_average_loss(per_example_loss(y, probs), global_batch_size=global_batch)
            grads = tape.gradient(loss, net.trainable_variables)
            net.optimizer.apply_gradients(zip(grads, net.trainable_variables, strict=True))
            correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(y, 1), tf.argmax(probs, 1)), tf.float32))
            return loss, correct, stop_requested

        results = strategy.run(replica_step, args=(images, labels))
        return tuple(strategy.reduce(tf.distribute.ReduceOp.SUM, r, axis=None) for r in results)

    cluster_checkpoint = (
        ClusterCheckpoint(checkpoints.location, net, strategy, fingerprint(cfg, splits)) if checkpoints else None
    )
    history = (cluster_checkpoint.restore() if cluster_checkpoint else None) or []
    done = _step(net)
    resumed_from = None
    if done:
        resumed_from = {"location": str(cluster_checkpoint.dir), "epoch": done // per_epoch, "step": done % per_epoch}
        log.info("resuming run %s at epoch %d, step %d", cfg.run_id, done // per_epoch + 1, done % per_epoch)

    # TensorBoard from the chief only (the platform collects one log dir; every worker holds the same numbers).
    summaries = EpochSummaries(cfg.log_dir if strategy.extended.should_checkpoint else "")
    stop = {"requested": False}
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.update(requested=True))
    started = time.perf_counter()
    try:
        for epoch in range(done // per_epoch, cfg.epochs):
            t0, skip = time.perf_counter(), (done % per_epoch if epoch == done // per_epoch else 0)
            ds = training_dataset(InputSpec.of(cfg), splits, epoch, global_batch, skip_batches=skip)
            total_loss, total_correct, steps, stops = 0.0, 0.0, 0, 0.0
            for images, labels in strategy.experimental_distribute_dataset(ds):
                loss, correct, stops = train_step(images, labels, tf.constant(float(stop["requested"])))
                total_loss, total_correct, steps = total_loss + float(loss), total_correct + float(correct), steps + 1
                if float(stops) > 0:  # some worker was told to stop: all stop after this same step
                    break
            if steps + skip >= per_epoch:
                history.append(_epoch(net, splits, epoch, t0, total_loss, total_correct, steps, skip, global_batch))
                report_epoch(history[-1], cfg.epochs)
                summaries.write(history[-1])
            if float(stops) > 0:
                at = _step(net)
                if cluster_checkpoint:
                    cluster_checkpoint.save(history)
                    raise Preempted(
                        f"stopped by SIGTERM at step {at} of {cfg.epochs * per_epoch} (all workers); "
                        f"checkpoint saved to {cluster_checkpoint.dir}; start the workers again with "
                        f"--run-id {cfg.run_id} to resume"
                    )
                raise Preempted("stopped by SIGTERM; no --checkpoint-dir was set, so the run cannot resume")
            if cluster_checkpoint:
                cluster_checkpoint.save(history)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return net, history, time.perf_counter() - started, resumed_from


def _epoch(net, splits, epoch, t0, total_loss, total_correct, steps, skip, global_batch) -> dict:
    seen = min(len(splits.y_train), steps * global_batch) if skip else len(splits.y_train)
    logs = {"accuracy": [total_correct / max(seen, 1)], "loss": [total_loss / max(steps, 1)]}
    if len(splits.y_val):  # validation needs no collectives: every worker holds the same weights
        val_probs = _local_predict(net, splits.x_val)
        logs["val_accuracy"] = [float(np.mean(val_probs.argmax(1) == splits.y_val))]
        logs["val_loss"] = [cross_entropy(val_probs, splits.y_val)]
    return epoch_record(epoch, logs, time.perf_counter() - t0, net)


def _local_predict(net, images: np.ndarray, batch: int = 512) -> np.ndarray:
    out = [
        net(tf.constant(images[i : i + batch], tf.float32) / 255.0, training=False).numpy()
        for i in range(0, len(images), batch)
    ]
    return np.concatenate(out)


def _step(net: keras.Model) -> int:
    """The optimizer's step counter (a mirrored variable under the strategy)."""
    return int(net.optimizer.iterations.numpy())

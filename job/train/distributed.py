"""Synchronous multi-worker training (a cluster in TF_CONFIG, or SageMaker's hosts): checkpointed, preemptible.

Keras 3's `fit` does not run under tf.distribute.MultiWorkerMirroredStrategy (keras-team/keras#20585:
PerReplica values reach the training step unconverted), so multi-worker runs train each epoch with this small
custom step inside the shared epoch loop (job.train.epochs): each replica computes its share of the global-batch
loss, the Keras optimizer all-reduces (sums) the gradients across workers and applies the same update
everywhere. The data pipeline is the single-worker one (same order and augmentation for a given seed and
epoch), sharded by tf.distribute.

Checkpoints (with --checkpoint-dir) are TensorFlow's own: a tf.train.Checkpoint of the model, the optimizer
(its step counter included: the position to resume at), the history and the config fingerprint, saved by every
worker at the end of every epoch through a tf.train.CheckpointManager (the chief into
`<checkpoint-dir>/<run-id>/multiworker`, the others into scratch folders they delete, as
MultiWorkerMirroredStrategy requires), and read back by all of them.

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
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from job.config.parts import TrainConfig
from job.errors import CheckpointError
from job.gates.json_doc import load_json
from job.train.build import compile_model
from job.train.checkpoint import check_fingerprint, fingerprint
from job.train.epochs import Plan, Saver, Start, StopFlag, TrainResult, run_epochs
from job.train.input import training_dataset
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
        self.net, self.fp = net, fp
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

    def restore(self, steps_per_epoch: int) -> Start:
        """The model as checkpointed (restored in place) at the position its optimizer's step counter gives."""
        latest = tf.train.latest_checkpoint(str(self.dir))
        if latest is None:
            return Start(self.net)
        try:
            stored = tf.train.load_checkpoint(latest).get_tensor("fingerprint/.ATTRIBUTES/VARIABLE_VALUE")
            theirs = load_json(stored, "its fingerprint", error=CheckpointError, expect=dict)
        except (tf.errors.OpError, ValueError, CheckpointError) as exc:
            raise CheckpointError(f"checkpoint {self.dir} is corrupt ({exc}); delete it to start over") from None
        check_fingerprint(str(self.dir), self.fp, theirs)
        self.checkpoint.restore(latest).assert_existing_objects_matched()
        history = load_json(  # NaN allowed: a diverged epoch's loss is recorded as NaN
            self.history.numpy(), f"checkpoint {self.dir}: history", error=CheckpointError, allow_nan=True, expect=list
        )
        if not all(isinstance(record, dict) for record in history):
            raise CheckpointError(f"checkpoint {self.dir}: history is not a list of epoch records; delete it")
        epoch, step = divmod(int(self.net.optimizer.iterations.numpy()), steps_per_epoch)
        if not (epoch or step):
            return Start(self.net, history)
        return Start(self.net, history, epoch, step, {"location": str(self.dir), "epoch": epoch, "step": step})

    def save(self, *, epoch: int, step: int, history: list[dict]) -> None:
        """The position is the optimizer's step counter, saved with it; `epoch` and `step` are for the log."""
        self.history.assign(json.dumps(history))
        self.manager.save()
        if not self.is_chief:
            shutil.rmtree(self.write_dir, ignore_errors=True)
        log.info("checkpoint saved: %s (epoch %d, step %d)", self.dir, epoch, step)


def train_multi_worker(training: TrainConfig, splits, strategy, checkpoints=None) -> TrainResult:
    with strategy.scope():
        net = compile_model(training, splits.num_classes, splits.x_train)
    optim = training.optim
    steps = steps_per_epoch(len(splits.y_train), optim.batch_size, optim.drop_last)
    plan = Plan(training.run_id, optim.epochs, steps, cluster=True)
    if not checkpoints:
        return run_epochs(ClusterEpochs(training, splits, net, strategy), Start(net), plan, None)
    checkpoint = ClusterCheckpoint(checkpoints.location, net, strategy, fingerprint(training, splits))
    start = checkpoint.restore(plan.steps)
    saver = Saver(str(checkpoint.dir), checkpoint.save)
    return run_epochs(ClusterEpochs(training, splits, net, strategy), start, plan, saver)


class ClusterEpochs:
    """The custom step on every worker, with the workers' stop flags all-reduced (epochs.EpochTrainer)."""

    def __init__(self, training: TrainConfig, splits, net: keras.Model, strategy):
        self.net, self.splits, self.strategy = net, splits, strategy
        self.spec, self.global_batch = training.inputs, training.optim.batch_size
        self.stop = StopFlag()
        self.train_step = _train_step(net, strategy, training.optim.label_smoothing, self.global_batch)
        # TensorBoard from the chief only (the platform collects one log dir; every worker holds the same numbers).
        self.summaries = EpochSummaries(training.log_dir if strategy.extended.should_checkpoint else "")
        self.totals = (0.0, 0.0, 0, 0)

    def fit(self, epoch: int, skip: int) -> tuple[int, bool]:
        ds = training_dataset(self.spec, self.splits, epoch, self.global_batch, skip_batches=skip)
        total_loss, total_correct, steps, stopped = 0.0, 0.0, 0, False
        for images, labels in self.strategy.experimental_distribute_dataset(ds):
            loss, correct, stops = self.train_step(images, labels, tf.constant(float(self.stop.requested)))
            total_loss, total_correct, steps = total_loss + float(loss), total_correct + float(correct), steps + 1
            if float(stops) > 0:  # some worker was told to stop: all stop after this same step
                stopped = True
                break
        self.totals = (total_loss, total_correct, steps, skip)
        return steps, stopped

    def logs(self) -> dict:
        total_loss, total_correct, steps, skip = self.totals
        y_train, y_val = self.splits.y_train, self.splits.y_val
        seen = min(len(y_train), steps * self.global_batch) if skip else len(y_train)
        logs = {"accuracy": [total_correct / max(seen, 1)], "loss": [total_loss / max(steps, 1)]}
        if len(y_val):  # validation needs no collectives: every worker holds the same weights
            val_probs = _local_predict(self.net, self.splits.x_val)
            logs["val_accuracy"] = [float(np.mean(val_probs.argmax(1) == y_val))]
            logs["val_loss"] = [cross_entropy(val_probs, y_val)]
        return logs

    def reported(self, record: dict) -> None:
        self.summaries.write(record)


def _train_step(net: keras.Model, strategy, label_smoothing: float, global_batch: int):
    """One synchronous step; returns the summed loss, correct predictions and stop flags of all replicas."""
    per_example_loss = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing, reduction=None)

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

    return train_step


def _local_predict(net, images: np.ndarray, batch: int = 512) -> np.ndarray:
    out = [
        net(tf.constant(images[i : i + batch], tf.float32) / 255.0, training=False).numpy()
        for i in range(0, len(images), batch)
    ]
    return np.concatenate(out)

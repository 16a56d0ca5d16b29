"""Training: tf.data input, the optimizer and schedule, and an epoch loop that can stop and resume.

`fit` is called once per epoch (initial_epoch=e, epochs=e+1) so that the data order and the
augmentation of epoch e depend only on (seed, e): a run stopped by SIGTERM in the middle of an epoch
saves a checkpoint (model + optimizer state, epoch, step, history) and, started again with the same
run id and checkpoint dir, skips exactly the batches it had already trained on.
"""

from __future__ import annotations

import csv
import logging
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from job.config import Config
from job.data import Splits
from job import model as model_lib
from job.resources import auto_precision

log = logging.getLogger(__name__)


class Preempted(Exception):
    """SIGTERM arrived; a checkpoint was saved. Exit 143 and restart with the same run id to resume."""


@dataclass
class TrainResult:
    model: keras.Model
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from: dict | None = None


_STRATEGY = None


def use_multi_worker_strategy() -> None:
    """TF_CONFIG names several workers: synchronous data-parallel training across them (all-reduce)."""
    global _STRATEGY
    _STRATEGY = tf.distribute.MultiWorkerMirroredStrategy()
    log.info("multi-worker training: %d replicas in sync", _STRATEGY.num_replicas_in_sync)


def seed_everything(seed: int, deterministic: bool) -> None:
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


@keras.saving.register_keras_serializable(package="job")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from `start`*peak to `peak` over `warmup` of the steps, then linear decay to
    `end`*peak (airbench's triangle)."""

    def __init__(self, peak: float, total_steps: int, warmup: float = 0.23, start: float = 0.2, end: float = 0.07):
        self.peak, self.total_steps, self.warmup = float(peak), int(total_steps), float(warmup)
        self.start, self.end = float(start), float(end)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        total = float(max(self.total_steps, 1))
        up = max(self.warmup * total, 1.0)
        rising = self.start + (1.0 - self.start) * step / up
        falling = 1.0 + (self.end - 1.0) * tf.minimum((step - up) / max(total - up, 1.0), 1.0)
        return self.peak * tf.where(step < up, rising, falling)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup": self.warmup, "start": self.start,
                "end": self.end}


@keras.saving.register_keras_serializable(package="job")
class BiasScaledSGD(keras.optimizers.SGD):
    """airbench's optimizer, in mean-loss units:
    - Nesterov SGD with an L2 penalty in the gradient (so it goes through momentum);
    - a larger learning rate for BatchNorm biases (`bias_lr_scale`, with the penalty divided by it so the
      decay per step stays the same);
    - fast_net's whitening layer: its kernel is never updated, its bias learns for the first
      `stem_bias_steps` steps only;
    - lookahead: every `lookahead_every` steps the weights are pulled to a slow average of themselves,
      slow <- slow + (1 - d) * (weights - slow); weights <- slow, with d = 0.95**k * (step / total_steps)**3
      (no averaging early, more towards the end); the last step always syncs, so training ends on the
      average. The slow copies are optimizer variables: checkpoints keep them."""

    def __init__(self, l2: float = 0.0, bias_lr_scale: float = 1.0, stem_bias_steps: int = 0,
                 lookahead_every: int = 0, total_steps: int = 0, **kwargs):
        super().__init__(nesterov=kwargs.pop("nesterov", True), **kwargs)
        self.l2, self.bias_lr_scale = float(l2), float(bias_lr_scale)
        self.stem_bias_steps, self.lookahead_every, self.total_steps = (int(stem_bias_steps), int(lookahead_every),
                                                                        int(total_steps))
        if self.lookahead_every and self.total_steps < 1:
            raise ValueError("lookahead needs total_steps")

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.slow = self.add_optimizer_variables(variables, "slow") if self.lookahead_every else []

    def update_step(self, gradient, variable, learning_rate):
        # Keras hands the backend variable here; its Keras twin carries the layer path.
        index = self._get_variable_index(variable)
        path = self._trainable_variables[index].path
        if path == f"{model_lib.WHITEN}/kernel":
            return
        if path == f"{model_lib.WHITEN}/bias":
            tf.cond(self.iterations < self.stem_bias_steps,
                    lambda: self._sgd_step(gradient, variable, learning_rate, 1.0), lambda: None)
        else:
            self._sgd_step(gradient, variable, learning_rate, self.bias_lr_scale if path.endswith("/beta") else 1.0)
        if self.lookahead_every:
            self._lookahead(variable, self.slow[index])

    def _sgd_step(self, gradient, variable, learning_rate, scale: float):
        if self.l2:
            gradient = gradient + tf.cast(self.l2 / scale, gradient.dtype) * tf.cast(variable, gradient.dtype)
        super().update_step(gradient, variable, tf.cast(learning_rate, tf.float32) * scale)

    def _lookahead(self, variable, slow):
        k, total = self.lookahead_every, self.total_steps
        step = self.iterations + 1  # this step, counted from 1
        sync = tf.logical_or(tf.equal(step % k, 0), tf.equal(step, total))
        progress = tf.cast(step, tf.float32) / float(total)
        # At the first sync the slow copy is still unset: take the weights as they are.
        decay = tf.where(step <= k, 0.0, 0.95 ** k * progress ** 3)
        averaged = slow + (1.0 - decay) * (variable - slow)
        self.assign(slow, tf.where(sync, averaged, slow))
        self.assign(variable, tf.where(sync, averaged, variable))

    def get_config(self):
        return {**super().get_config(), "l2": self.l2, "bias_lr_scale": self.bias_lr_scale,
                "stem_bias_steps": self.stem_bias_steps, "lookahead_every": self.lookahead_every,
                "total_steps": self.total_steps}


def steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, -(-n // batch_size))


def compile_model(cfg: Config, num_classes: int, x_train: np.ndarray) -> keras.Model:
    if cfg.precision == "mixed_bfloat16" and auto_precision()[0] != cfg.precision:
        log.warning("precision mixed_bfloat16 on a CPU without AMX bf16: emulated, measured about 12x slower than "
                    "float32; use --precision auto")
    keras.mixed_precision.set_global_policy(cfg.precision)
    # fast_net fits its frozen first layer to the training images (never val/test).
    net = model_lib.build(cfg.model, num_classes, cfg.width, whitening_images=x_train, whitening_seed=cfg.seed)
    if cfg.optimizer == "adam":
        optimizer = keras.optimizers.Adam(learning_rate=cfg.learning_rate,
                                          weight_decay=cfg.weight_decay or None)
    else:
        per_epoch = steps_per_epoch(len(x_train), cfg.batch_size)
        total = cfg.epochs * per_epoch
        optimizer = BiasScaledSGD(learning_rate=OneCycle(cfg.learning_rate, total), momentum=cfg.momentum,
                                  l2=cfg.weight_decay, bias_lr_scale=cfg.bias_lr_scale,
                                  stem_bias_steps=cfg.stem_bias_epochs * per_epoch,
                                  lookahead_every=cfg.lookahead_every, total_steps=total)
    net.compile(optimizer=optimizer,
                loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing),
                metrics=["accuracy"])
    # Built now, over every trainable variable: its state then covers the stem whether or not the stem
    # learns in the first epoch (see stem_learns).
    optimizer.build(net.trainable_variables)
    return net


def _stem(net: keras.Model):
    return next((layer for layer in net.layers if layer.name == model_lib.WHITEN), None)


def stem_learns(net: keras.Model, learns: bool) -> None:
    """Let fast_net's whitening layer learn (its bias, in the first `stem_bias_epochs`) or freeze it, as
    airbench does. Frozen, no gradient flows below the first block's convolution, which skips its
    input-gradient: 28% more images/s at width 16 on 2 AVX2 cores with TensorFlow's own kernels (no clear
    gain at width 64 with oneDNN). The optimizer keeps the stem's state
    either way (it is built over all variables); saved models always have the stem trainable, so a
    checkpoint's optimizer state matches the model it loads into."""
    stem = _stem(net)
    if stem is not None and stem.trainable != learns:
        stem.trainable = learns
        net.train_function = None  # fit() traces a new step for the new set of trainable variables


def training_precision(net: keras.Model) -> str:
    """The global policy `net` was built under, read from its convolutions (its softmax is float32 always)."""
    convs = [layer for layer in net.layers if isinstance(layer, keras.layers.Conv2D)]
    return convs[0].dtype_policy.name if convs else "float32"


def _in_precision(net: keras.Model, cfg: Config, num_classes: int, x_train: np.ndarray) -> keras.Model:
    """A checkpoint written under another precision (`--precision auto` on another CPU: a preempted job that
    came back on another node type) resumes with the same weights and optimizer state in this run's precision.
    The variables are float32 under either policy, so nothing is lost."""
    if training_precision(net) == cfg.precision:
        return net
    log.info("checkpoint trained in %s; resuming in %s on this CPU", training_precision(net), cfg.precision)
    fresh = compile_model(cfg, num_classes, x_train)
    fresh.set_weights(net.get_weights())
    for mine, theirs in zip(fresh.optimizer.variables, net.optimizer.variables, strict=True):
        mine.assign(theirs)
    return fresh


def inference_copy(net: keras.Model, cfg: Config, num_classes: int) -> keras.Model:
    """The trained weights in a fresh, uncompiled float32 model: what is evaluated, exported and published.
    Float32, because ONNX Runtime has no bf16 convolutions on CPU and consumers expect it; uncompiled, so
    `model.keras` loads with plain Keras (the training model carries this job's optimizer class, which a
    consumer without the job's code cannot deserialize). Training state lives in checkpoints."""
    keras.mixed_precision.set_global_policy("float32")
    clone = model_lib.build(cfg.model, num_classes, cfg.width)
    clone.set_weights(net.get_weights())
    return clone


@dataclass(frozen=True)
class Augmentation:
    """Random crop from the image reflect-padded by `padding` pixels, and airbench's alternating flip: each
    training image gets a fixed random flip bit (from `seed`) in even epochs and the opposite bit in odd
    ones, so every two consecutive epochs show both orientations of every image."""
    padding: int
    seed: int
    epoch: int

    def flip_bits(self, n: int) -> np.ndarray:
        return (np.random.default_rng(self.seed).random(n) < 0.5) ^ bool(self.epoch % 2)


def _crop_and_flip(images, padding: int, flip, seed):
    """Vectorised over the batch, on uint8 (a quarter of float32's bytes): each image shifted by up to
    `padding` pixels each way, from its reflect-padded copy, and mirrored where `flip` is set. One gather
    per axis does both: a mirrored crop reads its columns in reverse order."""
    n = tf.shape(images)[0]
    if padding:
        images = tf.pad(images, [[0, 0], [padding, padding], [padding, padding], [0, 0]], mode="REFLECT")
        offsets = tf.random.stateless_uniform([n, 2], seed=seed, minval=0, maxval=2 * padding + 1, dtype=tf.int32)
    else:
        offsets = tf.zeros([n, 2], tf.int32)
    index = tf.range(32)[None, :]
    rows = offsets[:, :1] + index
    cols = offsets[:, 1:] + tf.where(flip[:, None], 31 - index, index)
    return tf.gather(tf.gather(images, rows, axis=1, batch_dims=1), cols, axis=2, batch_dims=1)


def make_dataset(x: np.ndarray, y: np.ndarray, num_classes: int, batch_size: int, *, shuffle_seed: int | None = None,
                 augment: Augmentation | None = None, skip_batches: int = 0) -> tf.data.Dataset:
    """uint8 images -> (float32 in [0, 1], one-hot). Shuffled with a fixed seed per epoch when asked."""
    flips = augment.flip_bits(len(x)) if augment else np.zeros(len(x), bool)
    ds = tf.data.Dataset.from_tensor_slices((x, y, flips))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=False)
    ds = ds.batch(batch_size)
    if skip_batches:
        ds = ds.skip(skip_batches)
    ds = ds.enumerate(start=skip_batches)

    def prepare(index, batch):
        images, labels, flip = batch
        if augment:
            images = _crop_and_flip(images, augment.padding, flip, tf.stack([tf.cast(shuffle_seed or 0, tf.int64), index]))
        return tf.cast(images, tf.float32) / 255.0, tf.one_hot(labels, num_classes)

    # Fixed parallelism, no autotuning: with tf.data's autotuner on, destroying the iterator at the end
    # of fit() blocked for up to ~35 s, both cores idle, after about half of the epochs on this machine
    # (measured: 10 of 20 fits; 0 of 10 without it, at the same training speed).
    options = tf.data.Options()
    options.autotune.enabled = False
    ds = ds.map(prepare, num_parallel_calls=2, deterministic=True).prefetch(2)
    return ds.with_options(options)


class _StopOnSignal(keras.callbacks.Callback):
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


class _EpochLogger(keras.callbacks.Callback):
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


def train(cfg: Config, splits: Splits, checkpoints=None, extra_callbacks=()) -> TrainResult:
    """Train cfg.model on splits.train with splits.val as validation data; resume from `checkpoints` if any."""
    from job.checkpoint import fingerprint

    num_classes = splits.num_classes
    if _STRATEGY is not None:
        from job.distributed import train_multi_worker
        if checkpoints:
            log.warning("multi-worker training does not checkpoint/resume; --checkpoint-dir is ignored")
        net, history, seconds = train_multi_worker(cfg, splits, _STRATEGY, compile_model, training_dataset,
                                                   _epoch_record)
        return TrainResult(net, history, seconds)
    state = checkpoints.load(fingerprint(cfg, splits)) if checkpoints else None
    if state:
        net, history = _in_precision(state.model, cfg, num_classes, splits.x_train), list(state.history)
        start_epoch, skip = state.epoch, state.step
        log.info("resuming run %s at epoch %d, step %d", cfg.run_id, start_epoch + 1, skip)
    else:
        net, history, start_epoch, skip = compile_model(cfg, num_classes, splits.x_train), [], 0, 0

    stopper = _StopOnSignal()
    previous = signal.signal(signal.SIGTERM, lambda *_: setattr(stopper, "requested", True))
    callbacks: list = [stopper, *extra_callbacks]
    if cfg.log_dir:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=cfg.log_dir, update_freq="epoch"))
    val_ds = make_dataset(splits.x_val, splits.y_val, num_classes, max(cfg.batch_size, 256))
    steps = steps_per_epoch(len(splits.y_train), cfg.batch_size)
    callbacks.append(_EpochLogger(cfg.epochs, steps, sys.stdout.isatty()))
    started = time.perf_counter()
    try:
        for epoch in range(start_epoch, cfg.epochs):
            train_ds = training_dataset(cfg, splits, epoch, cfg.batch_size, skip_batches=skip)
            stem_learns(net, epoch < cfg.stem_bias_epochs)
            t0 = time.perf_counter()
            fit = net.fit(train_ds, validation_data=val_ds, initial_epoch=epoch, epochs=epoch + 1,
                          verbose=0, callbacks=callbacks, shuffle=False)
            if stopper.requested:
                step = skip + stopper.steps_done
                if step >= steps:  # the signal came during the last step: the epoch is complete
                    history.append(_epoch_record(epoch, fit.history, time.perf_counter() - t0, net))
                    epoch, step = epoch + 1, 0
                if checkpoints:
                    _save(checkpoints, net, fingerprint(cfg, splits), epoch=epoch, step=step, history=history)
                    raise Preempted(f"stopped by SIGTERM at epoch {epoch + 1}, step {step}; checkpoint saved to "
                                    f"{checkpoints.location}; start again with --run-id {cfg.run_id} to resume")
                raise Preempted("stopped by SIGTERM; no --checkpoint-dir was set, so the run cannot resume")
            history.append(_epoch_record(epoch, fit.history, time.perf_counter() - t0, net))
            skip = 0
            if checkpoints:
                _save(checkpoints, net, fingerprint(cfg, splits), epoch=epoch + 1, step=0, history=history)
    finally:
        signal.signal(signal.SIGTERM, previous)
        stem_learns(net, True)  # the trained model is saved and published as built
    return TrainResult(net, history, time.perf_counter() - started, state.info if state else None)


def _save(checkpoints, net: keras.Model, fp: dict, **state) -> None:
    """Checkpoint with the stem trainable (see stem_learns); the traced training step stays as it is."""
    stem = _stem(net)
    frozen = stem is not None and not stem.trainable
    if frozen:
        stem.trainable = True
    try:
        checkpoints.save(net, fp, **state)
    finally:
        if frozen:
            stem.trainable = False


def training_dataset(cfg: Config, splits: Splits, epoch: int, batch_size: int, skip_batches: int = 0) -> tf.data.Dataset:
    """Epoch `epoch`'s batches: order and augmentation depend only on (seed, epoch)."""
    augment = Augmentation(cfg.crop_padding, cfg.seed, epoch) if cfg.augment else None
    return make_dataset(splits.x_train, splits.y_train, splits.num_classes, batch_size,
                        shuffle_seed=cfg.seed * 1000 + epoch, augment=augment, skip_batches=skip_batches)


def _epoch_record(epoch: int, logs: dict, seconds: float, net: keras.Model) -> dict:
    record = {"epoch": epoch + 1, "seconds": round(seconds, 3)}
    for key, values in logs.items():
        record[key] = float(values[-1])
    # Keras evaluates a schedule at the current step here; a variable may be mirrored across workers.
    record["learning_rate"] = float(keras.ops.convert_to_numpy(net.optimizer.learning_rate))
    return record


def write_history(history: list[dict], path: Path) -> None:
    keys = list(dict.fromkeys(k for row in history for k in row))
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)

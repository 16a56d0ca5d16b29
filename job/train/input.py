"""The tf.data input: uint8 images -> shuffled, augmented, float32 batches. Never part of the exported graph.

An epoch's order and augmentation depend only on (seed, epoch), so a resumed run sees exactly the batches
an uninterrupted one would have.
"""

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from job.config.parts import InputSpec  # what the training input needs (cfg.inputs)
from job.train.optim import drops_last_batch


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


def make_dataset(
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    batch_size: int,
    *,
    shuffle_seed: int | None = None,
    augment: Augmentation | None = None,
    skip_batches: int = 0,
    drop_last: bool = False,
) -> tf.data.Dataset:
    """uint8 images -> (float32 in [0, 1], one-hot). Shuffled with a fixed seed per epoch when asked; the last
    partial batch dropped when `drop_last` (and a full one exists)."""
    flips = augment.flip_bits(len(x)) if augment else np.zeros(len(x), bool)
    ds = tf.data.Dataset.from_tensor_slices((x, y, flips))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=False)
    ds = ds.batch(batch_size, drop_remainder=drops_last_batch(len(x), batch_size, drop_last))
    if skip_batches:
        ds = ds.skip(skip_batches)
    ds = ds.enumerate(start=skip_batches)

    def prepare(index, batch):
        images, labels, flip = batch
        if augment:
            images = _crop_and_flip(
                images, augment.padding, flip, tf.stack([tf.cast(shuffle_seed or 0, tf.int64), index])
            )
        return tf.cast(images, tf.float32) / 255.0, tf.one_hot(labels, num_classes)

    # Fixed parallelism, no autotuning: with tf.data's autotuner on, destroying the iterator at the end
    # of fit() blocked for up to ~35 s, both cores idle, after about half of the epochs on this machine
    # (measured: 10 of 20 fits; 0 of 10 without it, at the same training speed).
    options = tf.data.Options()
    options.autotune.enabled = False
    ds = ds.map(prepare, num_parallel_calls=2, deterministic=True).prefetch(2)
    return ds.with_options(options)


def training_dataset(spec: InputSpec, splits, epoch: int, batch_size: int, skip_batches: int = 0) -> tf.data.Dataset:
    """Epoch `epoch`'s batches: order and augmentation depend only on (seed, epoch)."""
    augment = Augmentation(spec.crop_padding, spec.seed, epoch) if spec.augment else None
    return make_dataset(
        splits.x_train,
        splits.y_train,
        splits.num_classes,
        batch_size,
        shuffle_seed=spec.seed * 1000 + epoch,
        augment=augment,
        skip_batches=skip_batches,
        drop_last=spec.drop_last,
    )

"""Models ready to train or to export: built in the run's precision, compiled with the run's optimizer, and
the float32 copy that is evaluated, exported and published."""

import logging

import keras
import numpy as np
import tensorflow as tf

from job.config.parts import TrainConfig
from job.train import model as model_lib
from job.train import optim
from job.train.optim import build_optimizer
from job.train.precision import model_precision, precision_policy, warn_if_emulated

log = logging.getLogger(__name__)


def seed_everything(seed: int, deterministic: bool) -> None:
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def compile_model(training: TrainConfig, num_classes: int, x_train: np.ndarray) -> keras.Model:
    warn_if_emulated(training.precision)
    with precision_policy(training.precision):
        # fast_net fits its fixed first layer to the training images (never val/test).
        # The network that trains may use faster layers (--train-layers); what is published is inference_copy's.
        net = model_lib.build(
            training.model,
            num_classes,
            whitening_images=x_train,
            whitening_seed=training.inputs.seed,
            for_training=True,
        )
    optimizer = build_optimizer(training.optim, len(x_train))
    net.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=training.optim.label_smoothing),
        metrics=["accuracy"],
    )
    optimizer.build(net.trainable_variables)
    bind_statistics(net)
    return net


def bind_statistics(net: keras.Model) -> keras.Model:
    """Lookahead's slow copies of the running statistics follow `net` (a new or a loaded model)."""
    if isinstance(net.optimizer, optim.BiasScaledSGD):
        net.optimizer.bind_statistics(net)
    return net


def in_precision(net: keras.Model, training: TrainConfig, num_classes: int, x_train: np.ndarray) -> keras.Model:
    """A checkpoint written under another precision (`--precision auto` on another CPU: a preempted job that
    came back on another node type) resumes with the same weights and optimizer state in this run's precision.
    The variables are float32 under either policy, so nothing is lost."""
    if model_precision(net) == training.precision:
        return bind_statistics(net)
    log.info("checkpoint trained in %s; resuming in %s on this CPU", model_precision(net), training.precision)
    fresh = compile_model(training, num_classes, x_train)
    fresh.set_weights(net.get_weights())
    for mine, theirs in zip(fresh.optimizer.variables, net.optimizer.variables, strict=True):
        mine.assign(theirs)
    return fresh


def inference_copy(net: keras.Model, arch: model_lib.Architecture, num_classes: int) -> keras.Model:
    """The trained weights in a fresh, uncompiled float32 model: what is evaluated, exported and published.
    Float32, because ONNX Runtime has no bf16 convolutions on CPU and consumers expect it; uncompiled, so
    `model.keras` loads with plain Keras (the training model carries this job's optimizer class, which a
    consumer without the job's code cannot deserialize). Training state lives in checkpoints."""
    with precision_policy("float32"):
        clone = model_lib.build(arch, num_classes)
    clone.set_weights(net.get_weights())
    return clone

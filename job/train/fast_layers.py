"""Training-only layers: the functions of fast_net's stock layers, computed in fewer passes over memory.

Profiled on 2 cores of an AMX Xeon in bf16 (docs/performance.md, "Where the time goes"), the stock-layer GELU
(five elementwise layers, and autodiff's dozen ops behind them) took 41% of a training step's op time and Keras'
BatchNormalization (moments in float32, a cast on each side, eight ops) 16%; the convolutions 35%. Here:

- `FusedBatchNorm`: one FusedBatchNormV3 op (oneDNN) forward and one backward, in the compute dtype (bf16 under
  mixed_bfloat16), statistics in float32; the same variables, paths and moving-average update as the Keras
  layer it subclasses, which it falls back to outside training;
- `FusedGelu`: GELU's tanh form, x * sigmoid(c (x + 0.044715 x^3)), forward and gradient each one XLA-compiled
  elementwise loop in float32 (XLA on the activation alone: XLA on the whole step loses oneDNN's convolutions).

Neither adds a weight, so the trained weights copy one to one into the stock network (`inference_copy`); the
published model never contains these classes. They are registered Keras objects: checkpoints hold them.
"""

import math

import keras
import tensorflow as tf

GELU_SCALE = 2 * math.sqrt(2 / math.pi)  # tanh(z) = 2 sigmoid(2z) - 1 folds GELU's 1/2 and tanh into a sigmoid
GELU_CUBIC = 0.044715


@tf.function(jit_compile=True)
def _gelu_forward(x):
    x32 = tf.cast(x, tf.float32)
    s = tf.sigmoid(GELU_SCALE * (x32 + GELU_CUBIC * x32 * x32 * x32))
    return tf.cast(x32 * s, x.dtype)


@tf.function(jit_compile=True)
def _gelu_backward(x, dy):
    """d/dx x s(u) = s + x s (1 - s) u', with u = c (x + 0.044715 x^3): recomputed from x, not stored."""
    x32 = tf.cast(x, tf.float32)
    s = tf.sigmoid(GELU_SCALE * (x32 + GELU_CUBIC * x32 * x32 * x32))
    slope = s * (1 + x32 * (1 - s) * GELU_SCALE * (1 + 3 * GELU_CUBIC * x32 * x32))
    return tf.cast(tf.cast(dy, tf.float32) * slope, x.dtype)


@tf.custom_gradient
def gelu_tanh(x):
    return _gelu_forward(x), lambda dy: _gelu_backward(x, dy)


@keras.saving.register_keras_serializable(package="job")
class FusedGelu(keras.layers.Layer):
    """GELU (tanh form) in one compiled pass each way; the stock network spells it with five layers."""

    def call(self, inputs):
        return gelu_tanh(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="job")
class FusedBatchNorm(keras.layers.BatchNormalization):
    """Keras' BatchNormalization (center only, last axis, no mask) as one op in the compute dtype while training."""

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable) or mask is not None or self.scale or self.axis not in (-1, 3):
            return super().call(inputs, training=training, mask=mask)
        channels = inputs.shape[-1]
        beta = tf.cast(self.beta.value, tf.float32) if self.center else tf.zeros([channels])
        outputs, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=inputs,
            scale=tf.ones([channels]),
            offset=beta,
            mean=tf.zeros([0]),
            variance=tf.zeros([0]),
            epsilon=self.epsilon,
            is_training=True,
        )
        # The op hands back the unbiased batch variance (n / (n - 1)); Keras averages the biased one.
        count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), tf.float32)
        variance = variance * (count - 1.0) / count
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return outputs

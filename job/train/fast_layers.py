"""Training-only layers: the functions of fast_net's stock layers, computed in fewer passes over memory.

Profiled on 2 cores of an AMX Xeon in bf16 (docs/performance.md, "Where the time goes"), the stock-layer GELU
(five elementwise layers, and autodiff's dozen ops behind them) took 41% of a training step's op time and Keras'
BatchNormalization (moments in float32, a cast on each side, eight ops) 16%; the convolutions 35%. Here:

- `FusedBatchNorm`: one FusedBatchNormV3 op (oneDNN) forward and one backward, in the compute dtype (bf16 under
  mixed_bfloat16), statistics in float32; the same variables, paths and moving-average update as the Keras
  layer it subclasses, which it falls back to outside training;
- `FusedGelu`: GELU's tanh form, x * sigmoid(c (x + 0.044715 x^3)) = x (1 + tanh(c/2 (...))) / 2, forward and
  gradient each one XLA-compiled elementwise loop in float32 (XLA on the activation alone: XLA on the whole step
  loses oneDNN's convolutions), written with tanh and with bf16 widened and rounded as integer bit operations:
  each form measured faster in XLA:CPU than sigmoid and XLA's own bf16 convert (docs/performance.md);
- `MatmulGradConv2D`: Keras' Conv2D whose kernel gradient, on the small maps of the last blocks, in bf16 on a CPU
  with AMX, is nine matrix products instead of oneDNN's filter-gradient kernel (1.5-2.9x faster there;
  docs/performance.md).

None adds a weight, so the trained weights copy one to one into the stock network (`inference_copy`); the
published model never contains these classes. They are registered Keras objects: checkpoints hold them.
"""

import functools
import math

import keras
import tensorflow as tf

from job.runtime.resources import cpu_has

GELU_SCALE = 2 * math.sqrt(2 / math.pi)  # the stock network spells GELU as x sigmoid(GELU_SCALE u) (model._gelu)
GELU_CUBIC = 0.044715
_TANH_SCALE = GELU_SCALE / 2  # here as 0.5 x (1 + tanh(u')), the same function: XLA's tanh is its cheapest form


def _to_float32(x):
    """bf16 -> float32 as the bit shift it is: XLA:CPU's own bf16 convert is a scalar loop (a bf16 -> float32
    -> bf16 round trip of a 256x31x31x24 tensor took 6.4-7.0 ms, this 1.1-1.6 ms; AMX Xeon, 2 threads)."""
    if x.dtype != tf.bfloat16:
        return tf.cast(x, tf.float32)
    bits = tf.cast(tf.bitcast(x, tf.uint16), tf.uint32)
    return tf.bitcast(tf.bitwise.left_shift(bits, 16), tf.float32)


def _from_float32(y, dtype):
    """float32 -> bf16 rounded to nearest even, as integer arithmetic (see _to_float32); activations are finite."""
    if dtype != tf.bfloat16:
        return tf.cast(y, dtype)
    bits = tf.bitcast(y, tf.uint32)
    bits = bits + 0x7FFF + tf.bitwise.bitwise_and(tf.bitwise.right_shift(bits, 16), 1)
    return tf.bitcast(tf.cast(tf.bitwise.right_shift(bits, 16), tf.uint16), tf.bfloat16)


@tf.function(jit_compile=True)
def _gelu_forward(x):
    x32 = _to_float32(x)
    t = tf.tanh(_TANH_SCALE * (x32 + GELU_CUBIC * x32 * x32 * x32))
    return _from_float32(0.5 * x32 * (1 + t), x.dtype)


@tf.function(jit_compile=True)
def _gelu_backward(x, dy):
    """d/dx x (1 + tanh(u)) / 2 = (1 + t) / 2 + x (1 - t^2) u' / 2, t = tanh(u): recomputed from x, not stored."""
    x32 = _to_float32(x)
    t = tf.tanh(_TANH_SCALE * (x32 + GELU_CUBIC * x32 * x32 * x32))
    slope = 0.5 * (1 + t) + 0.5 * x32 * (1 - t * t) * _TANH_SCALE * (1 + 3 * GELU_CUBIC * x32 * x32)
    return _from_float32(_to_float32(dy) * slope, x.dtype)


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


def matmul_filter_gradient_pays(height: int, width: int, channels_in: int, channels_out: int, dtype: str) -> bool:
    """Where nine matrix products beat oneDNN's filter gradient (TensorFlow 2.21's oneDNN 3.7 `brgconv_bwd_w`).
    Measured forward + both gradients of one 3x3 convolution, batch 256, 2 threads of an AMX Xeon, in bf16:
    256->256 channels on 7x7 maps 42.6 -> 28.0 ms, on 3x3 maps 18.7 -> 6.5 ms; 64->64 on 3x3 2.0 -> 1.4 ms; but
    64->64 on 7x7 4.1 -> 4.6 ms and on 15x15 11.1 -> 20.9 ms (slower: there oneDNN's kernel stays). In float32 (the
    same CPU's AVX-512) the products were slower at every size (256->256 on 7x7 90.2 -> 97.5 ms, on 3x3 22.7 -> 24.1):
    the gain is AMX's bf16 matmul, so only bf16 on a CPU with AMX (no GPU) takes this path; nothing else was measured."""
    pixels = height * width
    small = pixels <= 9 or (pixels <= 49 and min(channels_in, channels_out) >= 256)
    return small and dtype == "bfloat16" and _trains_on_amx()


@functools.cache
def _trains_on_amx() -> bool:
    return cpu_has("amx_bf16") and not tf.config.list_physical_devices("GPU")


def _filter_gradient(x, dy):
    """dK[i, j] = sum over images and pixels of x shifted by (i - 1, j - 1), times dy: one (C_in x N·H·W) by
    (N·H·W x C_out) product per tap of the 3x3 'same' kernel, accumulated in float32 by oneDNN's matmul (AMX)."""
    height, width, channels_in, channels_out = x.shape[1], x.shape[2], x.shape[3], dy.shape[3]
    padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    dy_rows = tf.reshape(dy, [-1, channels_out])
    taps = [
        tf.matmul(tf.reshape(padded[:, i : i + height, j : j + width, :], [-1, channels_in]), dy_rows, transpose_a=True)
        for i in range(3)
        for j in range(3)
    ]
    return tf.reshape(tf.stack(taps), [3, 3, channels_in, channels_out])


@tf.custom_gradient
def conv3x3_matmul_filter_gradient(x, kernel):
    """tf.nn.conv2d (3x3, stride 1, 'same'); its input gradient is oneDNN's, its kernel gradient _filter_gradient."""
    y = tf.nn.conv2d(x, kernel, 1, "SAME")

    def gradient(dy):
        dx = tf.raw_ops.Conv2DBackpropInput(
            input_sizes=tf.shape(x), filter=kernel, out_backprop=dy, strides=[1, 1, 1, 1], padding="SAME"
        )
        return dx, _filter_gradient(x, dy)

    return y, gradient


@keras.saving.register_keras_serializable(package="job")
class MatmulGradConv2D(keras.layers.Conv2D):
    """Keras' Conv2D; while training, a 3x3 stride-1 'same' convolution without bias on small maps (where
    matmul_filter_gradient_pays) computes its kernel gradient as nine matrix products. Same variable, same math."""

    def call(self, inputs, training=None):
        plain = (
            self.kernel_size == (3, 3)
            and self.strides == (1, 1)
            and self.padding == "same"
            and self.dilation_rate == (1, 1)
            and self.groups == 1
            and not self.use_bias
            and self.data_format == "channels_last"
        )
        _, height, width, channels_in = inputs.shape
        pays = None not in (height, width, channels_in) and matmul_filter_gradient_pays(
            height, width, channels_in, self.filters, self.compute_dtype
        )
        if not (training and plain and pays):
            return super().call(inputs)
        # A tensor, not the variable: tf.custom_gradient would want a gradient for every variable read inside.
        kernel = tf.cast(self.kernel.value, self.compute_dtype)
        return conv3x3_matmul_filter_gradient(inputs, kernel)

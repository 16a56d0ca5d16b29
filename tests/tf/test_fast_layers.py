"""The training-only layers (job.train.fast_layers) compute what the stock layers compute, train the same
weights, and never reach the published model."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from job.train import build, fast_layers  # noqa: E402
from job.train import model as model_lib  # noqa: E402
from job.train.precision import precision_policy  # noqa: E402

ARCH = model_lib.Architecture(name="fast_net", width=8, activation="gelu", train_layers="fused")


def _images(n=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3)).astype(np.uint8)


def _pair(precision="float32"):
    """(stock, fused) networks with the same weights."""
    x = _images()
    with precision_policy(precision):
        stock = model_lib.build(ARCH, 10, x, 0)
        fused = model_lib.build(ARCH, 10, x, 0, for_training=True)
    fused.set_weights(stock.get_weights())
    return stock, fused


def _fused_classes(net):
    return {type(layer).__name__ for layer in net.layers if type(layer).__module__ == fast_layers.__name__}


def _training_step(net, x, y):
    with tf.GradientTape() as tape:
        loss = keras.losses.categorical_crossentropy(y, net(x, training=True))
    return [tf.cast(g, tf.float32).numpy() for g in tape.gradient(loss, net.trainable_variables)]


def test_only_the_training_network_has_the_fused_layers():
    stock, fused = _pair()
    assert _fused_classes(fused) == {"FusedBatchNorm", "FusedGelu", "MatmulGradConv2D"}
    assert _fused_classes(stock) == set()
    stock_only = model_lib.Architecture(name="fast_net", width=8, activation="gelu", train_layers="stock")
    assert _fused_classes(model_lib.build(stock_only, 10, for_training=True)) == set()
    # The same variables in the same order: the weights copy one to one.
    assert [w.shape for w in stock.weights] == [w.shape for w in fused.weights]
    assert [w.path.rsplit("/", 1)[1] for w in stock.weights] == [w.path.rsplit("/", 1)[1] for w in fused.weights]
    # Training really takes the one-op path (the comparisons below would hold trivially on Keras' fallback).
    step = tf.function(lambda x: fused(x, training=True)).get_concrete_function(tf.TensorSpec([2, 32, 32, 3]))
    assert "FusedBatchNormV3" in {op.type for op in step.graph.get_operations()}


def test_the_kernel_gradient_on_small_bf16_maps_is_matrix_products_where_the_cpu_has_amx():
    """In bf16 on an AMX CPU the kernel gradient of the one convolution on 3x3 maps (width 8) is nine matrix
    products; elsewhere (float32, or a CPU without AMX: measured slower there) all seven stay oneDNN's."""
    _, fused = _pair("mixed_bfloat16")

    @tf.function
    def gradients(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.cast(fused(x, training=True), tf.float32))
        return tape.gradient(loss, fused.trainable_variables)

    ops = gradients.get_concrete_function(tf.TensorSpec([2, 32, 32, 3])).graph.get_operations()
    on_amx = fast_layers._trains_on_amx()
    assert sum(op.type == "Conv2DBackpropFilter" for op in ops) == (6 if on_amx else 7)
    transposed = sum(op.type == "MatMul" and op.get_attr("transpose_a") for op in ops)
    assert transposed == (9 if on_amx else 0) + 1  # + the head's kernel gradient
    assert not fast_layers.matmul_filter_gradient_pays(3, 3, 256, 256, "float32")
    assert not fast_layers.matmul_filter_gradient_pays(15, 15, 256, 256, "bfloat16")


def test_the_nine_products_are_the_kernel_gradient_of_the_convolution():
    """On any CPU, in float32: the custom gradient equals TensorFlow's own for input and kernel."""
    rng = np.random.default_rng(4)
    x = tf.constant(rng.normal(size=(8, 5, 5, 16)), tf.float32)
    kernel = tf.constant(rng.normal(size=(3, 3, 16, 24)) * 0.1, tf.float32)
    dy = tf.constant(rng.normal(size=(8, 5, 5, 24)), tf.float32)

    def grads(conv):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            loss = tf.reduce_sum(conv(x, kernel) * dy)
        return [g.numpy() for g in tape.gradient(loss, [x, kernel])]

    want = grads(lambda a, k: tf.nn.conv2d(a, k, 1, "SAME"))
    got = grads(fast_layers.conv3x3_matmul_filter_gradient)
    for w, g in zip(want, got, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def test_a_fused_training_step_equals_the_stock_one_in_float32():
    """Outputs, every gradient and the BatchNorm running statistics after one step agree to float32 rounding
    (the fused BatchNorm's unbiased batch variance is converted back to the biased one Keras averages)."""
    stock, fused = _pair()
    x = tf.constant(_images(32, seed=1), tf.float32) / 255.0
    y = tf.one_hot(np.arange(32) % 10, 10)
    for want, got in zip(_training_step(stock, x, y), _training_step(fused, x, y), strict=True):
        assert np.linalg.norm(want - got) <= 1e-4 * np.linalg.norm(want) + 1e-7
    for want, got in zip(stock.non_trainable_variables, fused.non_trainable_variables, strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)
    moved = [v.numpy() for v in fused.non_trainable_variables if v.path.endswith("moving_variance")]
    assert not np.allclose(moved[0], 1.0)  # the step did update them: the comparison above is not vacuous


def test_bf16_fused_gradients_are_as_close_to_float32_as_the_stock_layers():
    """Under mixed_bfloat16 both differ from float32 by rounding; the fused layers compute in float32 inside, so
    they must not be further from it than Keras' own bf16 layers (measured: closer, most of all for the biases)."""
    with precision_policy("float32"):
        exact = model_lib.build(ARCH, 10, _images(), 0)
    stock, fused = _pair("mixed_bfloat16")
    exact.set_weights(stock.get_weights())
    x = tf.constant(_images(64, seed=2), tf.float32) / 255.0
    y = tf.one_hot(np.arange(64) % 10, 10)
    want = _training_step(exact, x, y)

    def error(net):
        return sum(
            np.linalg.norm(g - w) / np.linalg.norm(w) for g, w in zip(_training_step(net, x, y), want, strict=True)
        )

    assert error(fused) <= 1.1 * error(stock)


def test_the_published_copy_is_stock_keras_with_the_trained_weights(tmp_path):
    """A trained fused network becomes the float32 stock network (what is evaluated, exported and published):
    same predictions, no class of this job; the training network itself round-trips as a checkpoint would."""
    _, fused = _pair()
    fused.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy")
    x = _images(64, seed=3)
    fused.fit(x.astype(np.float32) / 255.0, np.eye(10)[np.arange(64) % 10], batch_size=16, epochs=1, verbose=0)
    copy = build.inference_copy(fused, ARCH, 10)
    assert _fused_classes(copy) == set()
    probe = x[:16].astype(np.float32) / 255.0
    np.testing.assert_allclose(copy.predict(probe, verbose=0), fused.predict(probe, verbose=0), atol=1e-5)
    fused.save(tmp_path / "checkpoint.keras")
    loaded = keras.models.load_model(tmp_path / "checkpoint.keras")
    assert _fused_classes(loaded) == {"FusedBatchNorm", "FusedGelu", "MatmulGradConv2D"}
    np.testing.assert_allclose(loaded.predict(probe, verbose=0), fused.predict(probe, verbose=0), atol=1e-6)


def test_the_integer_bf16_conversions_equal_tensorflows_casts():
    """The GELU widens bf16 and rounds back to it with bit operations (XLA's own convert is a scalar loop): both
    must equal tf.cast exactly, ties to even included, for every bf16 value and for float32s between them."""
    every_bf16 = tf.bitcast(tf.constant(np.arange(1 << 16, dtype=np.uint16)), tf.bfloat16)
    finite = tf.boolean_mask(every_bf16, tf.math.is_finite(tf.cast(every_bf16, tf.float32)))
    widened = tf.function(fast_layers._to_float32, jit_compile=True)(finite)
    np.testing.assert_array_equal(widened.numpy(), tf.cast(finite, tf.float32).numpy())
    rng = np.random.default_rng(0)
    ties = widened.numpy().view(np.uint32) | np.uint32(0x8000)  # exactly halfway between two bf16 values
    values = np.concatenate([rng.normal(0, 30, 100_000).astype(np.float32), ties.view(np.float32)])
    values = values[np.isfinite(values)]
    rounded = tf.function(lambda v: fast_layers._from_float32(v, tf.bfloat16), jit_compile=True)(values)
    np.testing.assert_array_equal(
        tf.bitcast(rounded, tf.uint16).numpy(), tf.bitcast(tf.cast(values, tf.bfloat16), tf.uint16).numpy()
    )

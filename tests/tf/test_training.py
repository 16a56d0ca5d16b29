"""The pieces of the fast recipe, on real TensorFlow: whitening stem, identity init, optimizer, schedule,
augmentation, and a checkpoint round trip of a fast-preset model."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from job import config  # noqa: E402
from job.train import build, optim  # noqa: E402
from job.train import input as input_lib  # noqa: E402
from job.train import model as model_lib  # noqa: E402
from job.train.precision import model_precision  # noqa: E402


def _smooth_images(n=200, seed=0):
    """Images whose neighbouring pixels and channels are correlated, like photos."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, 9, 9, 1)).repeat(4, axis=1).repeat(4, axis=2)[:, :32, :32]
    colour = base * np.array([1.0, 0.8, 0.6]) + 0.3 * rng.normal(size=(n, 32, 32, 3))
    return np.clip(128 + 40 * colour, 0, 255).astype(np.uint8)


def test_whitening_kernel_decorrelates_image_patches():
    images = _smooth_images()
    kernel = model_lib.whitening_kernel(images, eps=1e-6)
    assert kernel.shape == (2, 2, 3, 24)
    x = (images / 255.0 - model_lib.CIFAR_MEAN) / model_lib.CIFAR_STD
    patches = np.stack([x[:, i : 31 + i, j : 31 + j] for i in range(2) for j in range(2)], axis=3).reshape(-1, 12)
    out = patches @ kernel[..., :12].reshape(12, 12)
    covariance = out.T @ out / len(out)
    np.testing.assert_allclose(covariance, np.eye(12), atol=1e-3)
    np.testing.assert_array_equal(kernel[..., 12:], -kernel[..., :12])
    # The raw patches are strongly correlated: the test would fail without the whitening.
    assert abs(np.corrcoef(patches.T)[0, 1]) > 0.5


def test_fast_net_stem_is_fitted_to_the_images_and_only_its_bias_learns_for_a_few_epochs():
    cfg = config.resolve({"preset": "fast", "width": 8, "batch_size": 8, "stem_bias_epochs": 1}, env={})
    x, y = _smooth_images(32), np.random.default_rng(0).integers(0, 10, 32)
    net = build.compile_model(cfg.training, 10, x)
    stem = net.get_layer(model_lib.WHITEN)
    fitted = model_lib.whitening_kernel(x, seed=cfg.seed)
    np.testing.assert_allclose(stem.kernel.numpy(), fitted, rtol=1e-5)
    biases = [stem.bias.numpy()]
    for epoch in (0, 1):  # 4 steps each; the bias may learn in the first only
        net.fit(input_lib.make_dataset(x, y, 10, 8, shuffle_seed=epoch), epochs=1, verbose=0)
        biases.append(stem.bias.numpy())
    np.testing.assert_allclose(stem.kernel.numpy(), fitted, rtol=1e-5)
    assert np.abs(biases[1] - biases[0]).max() > 1e-4
    np.testing.assert_array_equal(biases[2], biases[1])


def test_partial_identity_init_passes_the_input_through():
    conv = keras.layers.Conv2D(6, 3, padding="same", use_bias=False)
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 4)).astype("float32")
    conv.build(x.shape)
    model_lib.start_as_identity(conv)
    y = conv(x).numpy()
    np.testing.assert_allclose(y[..., :4], x, atol=1e-6)
    assert np.abs(y[..., 4:]).max() > 0.01  # the other outputs start random


def test_fast_net_saves_and_loads_without_custom_objects(tmp_path):
    """A consumer loads model.keras with plain Keras (no `import job`), in a fresh process."""
    model_lib.fast_net(10, width=8, whitening_images=_smooth_images(20)).save(tmp_path / "m.keras")
    code = f"import keras; m = keras.models.load_model({str(tmp_path / 'm.keras')!r}); print(m.count_params())"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_one_cycle_rises_from_start_to_peak_then_falls_to_end():
    sched = optim.OneCycle(2.0, total_steps=100, warmup=0.25, start=0.2, end=0.1)
    values = [float(sched(s)) for s in (0, 25, 100, 150)]
    np.testing.assert_allclose(values, [0.4, 2.0, 0.2, 0.2], rtol=1e-6)
    assert float(sched(10)) < float(sched(20)) and float(sched(60)) > float(sched(80))


def test_bias_scaled_sgd_scales_batchnorm_bias_steps_and_adds_l2_to_the_gradient():
    bn = keras.layers.BatchNormalization(scale=False)
    dense = keras.layers.Dense(2, use_bias=False)
    bn.build((None, 2))
    dense.build((None, 2))
    bn.beta.assign([1.0, 1.0])
    dense.kernel.assign(np.ones((2, 2), "float32"))
    opt = optim.BiasScaledSGD(learning_rate=0.1, momentum=0.0, l2=0.5, bias_lr_scale=10.0)
    grads = [np.full((2,), 0.2, "float32"), np.full((2, 2), 0.2, "float32")]
    opt.apply_gradients(zip(grads, [bn.beta, dense.kernel], strict=True))
    # beta: 1 - 0.1 * 10 * (0.2 + 0.5 / 10 * 1) = 0.75; kernel: 1 - 0.1 * (0.2 + 0.5 * 1) = 0.93
    np.testing.assert_allclose(bn.beta.numpy(), [0.75, 0.75], rtol=1e-6)
    np.testing.assert_allclose(dense.kernel.numpy(), np.full((2, 2), 0.93), rtol=1e-6)


def test_lookahead_pulls_weights_to_the_slow_average_every_k_steps_and_at_the_last_step():
    w = keras.Variable(np.zeros(1, "float32"))
    opt = optim.BiasScaledSGD(learning_rate=1.0, momentum=0.0, lookahead_every=2, total_steps=3)
    seen = []
    for _ in range(3):  # each step alone moves w by +1
        opt.apply_gradients([(np.full(1, -1.0, "float32"), w)])
        seen.append(float(w.numpy()[0]))
    # step 2: first sync, the slow copy starts as the weights (2); step 3: the last step syncs with
    # decay 0.95**2 * (3/3)**3 = 0.9025, so w = 2 + 0.0975 * (3 - 2)
    np.testing.assert_allclose(seen, [1.0, 2.0, 2.0975], rtol=1e-6)


def test_alternating_flip_shows_each_image_both_ways_over_two_epochs():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(16, 32, 32, 3), dtype=np.uint8)
    y = np.arange(16)  # label = image index, to find each image after shuffling
    seen = []
    for epoch in (0, 1):
        aug = input_lib.Augmentation(padding=0, seed=7, epoch=epoch)
        ds = input_lib.make_dataset(x, y, 16, 5, shuffle_seed=epoch, augment=aug)
        flipped = np.zeros(16, bool)
        for images, labels in ds:
            for img, label in zip(images.numpy(), labels.numpy().argmax(1), strict=True):
                original = x[label] / 255.0
                assert np.allclose(img, original) or np.allclose(img, original[:, ::-1])
                flipped[label] = not np.allclose(img, original)
        seen.append(flipped)
    assert 0 < seen[0].sum() < 16 and np.all(seen[0] != seen[1])


def test_random_crop_shifts_within_the_padding():
    x = np.zeros((64, 32, 32, 3), np.uint8)
    x[:, 16, 16] = 255  # one bright pixel; after a crop it sits at most `padding` pixels away
    aug = input_lib.Augmentation(padding=2, seed=0, epoch=0)
    images = next(iter(input_lib.make_dataset(x, np.zeros(64, int), 10, 64, shuffle_seed=0, augment=aug)))[0].numpy()
    positions = {tuple(np.argwhere(img[..., 0] == 1.0)[0]) for img in images}
    assert len(positions) > 5
    assert all(abs(r - 16) <= 2 and (abs(c - 16) <= 2 or abs(c - 15) <= 2) for r, c in positions)


def test_fast_preset_model_survives_a_checkpoint_round_trip(tmp_path):
    from job.train.checkpoint import Checkpoints

    cfg = config.resolve({"preset": "fast", "width": 8, "run_id": "ck-fast", "batch_size": 8}, env={})
    rng = np.random.default_rng(0)
    x, y = _smooth_images(32), rng.integers(0, 10, 32)
    net = build.compile_model(cfg.training, 10, x)
    net.fit(input_lib.make_dataset(x, y, 10, 8), epochs=1, verbose=0)
    store = Checkpoints(str(tmp_path / "ck"), "ck-fast")
    store.save(net, {"fp": 1}, epoch=1, step=0, history=[{"epoch": 1}])
    loaded = store.load({"fp": 1}, epochs=2).model
    assert isinstance(loaded.optimizer, optim.BiasScaledSGD)
    assert (loaded.optimizer.l2, loaded.optimizer.bias_lr_scale) == (cfg.weight_decay, cfg.bias_lr_scale)
    assert int(loaded.optimizer.iterations) == int(net.optimizer.iterations) == 4
    for a, b in zip(net.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert len(loaded.optimizer.slow) == len(net.trainable_variables)  # lookahead's slow copies come back too
    for a, b in zip(net.optimizer.variables, loaded.optimizer.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    loaded.fit(input_lib.make_dataset(x, y, 10, 8), epochs=1, verbose=0)  # and it trains on
    assert int(loaded.optimizer.iterations) == 8


def test_a_bf16_checkpoint_resumes_in_float32_with_the_same_weights_and_optimizer_state(tmp_path):
    """`--precision auto` follows the CPU: a job preempted on an AMX node may come back on an AVX2 one."""
    from job.train.checkpoint import Checkpoints

    x, y = _smooth_images(32), np.random.default_rng(0).integers(0, 10, 32)
    on_amx = config.resolve({"preset": "fast", "width": 8, "batch_size": 8, "precision": "mixed_bfloat16"}, env={})
    net = build.compile_model(on_amx.training, 10, x)
    net.fit(input_lib.make_dataset(x, y, 10, 8), epochs=1, verbose=0)
    store = Checkpoints(str(tmp_path / "ck"), "moved")
    store.save(net, {"fp": 1}, epoch=1, step=0, history=[])
    loaded = store.load({"fp": 1}, epochs=2).model
    assert model_precision(loaded) == "mixed_bfloat16"

    on_avx2 = config.resolve({"preset": "fast", "width": 8, "batch_size": 8, "precision": "float32"}, env={})
    resumed = build.in_precision(loaded, on_avx2.training, 10, x)
    assert model_precision(resumed) == "float32"
    for a, b in zip(net.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(net.optimizer.variables, resumed.optimizer.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())  # iterations, momenta, lookahead's slow copies
    resumed.fit(input_lib.make_dataset(x, y, 10, 8), epochs=1, verbose=0)
    assert int(resumed.optimizer.iterations) == 8
    assert build.in_precision(resumed, on_avx2.training, 10, x) is resumed  # same precision: used as loaded


def test_training_precision_is_scoped_to_the_model_it_builds():
    """A bf16 run leaves Keras' global policy as it found it: the float32 exports and anything built later in
    the process (the bench, the next test) never inherit it."""
    assert keras.mixed_precision.global_policy().name == "float32"
    cfg = config.resolve({"preset": "fast", "width": 8, "batch_size": 8, "precision": "mixed_bfloat16"}, env={})
    net = build.compile_model(cfg.training, 10, _smooth_images(16))
    assert model_precision(net) == "mixed_bfloat16"
    assert keras.mixed_precision.global_policy().name == "float32"
    copy = build.inference_copy(net, model_lib.Architecture.of(cfg), 10)
    assert model_precision(copy) == "float32" and keras.mixed_precision.global_policy().name == "float32"


@pytest.mark.skipif(platform.machine() != "x86_64", reason="oneDNN kernels are TensorFlow's x86 build")
def test_the_job_turns_on_onednn_kernels_unless_told_not_to():
    """TensorFlow enables them by default only on CPUs with AVX512_VNNI/BF16/AMX; AVX2 CPUs train 1.4x faster
    with them. Importing the job package must switch them on before TensorFlow loads."""
    code = (
        "import job, tensorflow; from tensorflow.python.util import _pywrap_util_port as port; "
        "print(port.IsMklEnabled())"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    for setting, expected in ((None, "True"), ("0", "False")):
        run_env = env if setting is None else {**env, "TF_ENABLE_ONEDNN_OPTS": setting}
        proc = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env=run_env,
            cwd=Path(__file__).resolve().parent.parent,
        )
        assert proc.stdout.strip().splitlines()[-1] == expected, proc.stderr[-2000:]


def test_lookahead_ends_on_averaged_running_statistics():
    """airbench averages BatchNorm's running statistics with the weights: after the last step (always a sync)
    every running mean and variance equals its slow copy, and the copies moved away from their start."""
    cfg = config.resolve({"preset": "fast", "width": 8, "run_id": "la", "batch_size": 8, "epochs": 2}, env={})
    rng = np.random.default_rng(0)
    x, y = _smooth_images(32), rng.integers(0, 10, 32)
    net = build.compile_model(cfg.training, 10, x)
    pairs = net.optimizer._stats.items
    assert len(pairs) == 6  # every BatchNorm layer of fast_net
    for epoch in range(2):
        net.fit(input_lib.make_dataset(x, y, 10, 8, shuffle_seed=epoch), epochs=1, verbose=0)
    assert int(net.optimizer.iterations) == net.optimizer.total_steps == 8
    for moving_mean, slow_mean, moving_var, slow_var in pairs:
        np.testing.assert_allclose(moving_mean.numpy(), slow_mean.numpy(), rtol=1e-6)
        np.testing.assert_allclose(moving_var.numpy(), slow_var.numpy(), rtol=1e-6)
        assert np.abs(slow_mean.numpy()).sum() > 0

"""Network architectures. Each takes float32 images scaled to [0, 1] and returns class probabilities."""

import math

import keras
import numpy as np
from keras import layers

from job.config.parts import ModelConfig
from job.train import fast_layers

# What building a network needs of the run's config, and nothing more: the model piece (cfg.arch).
Architecture = ModelConfig


def build(
    arch: Architecture,
    num_classes: int,
    whitening_images: np.ndarray | None = None,
    whitening_seed: int = 0,
    for_training: bool = False,
) -> keras.Model:
    """`whitening_images`: training images (uint8) that fast_net's frozen first layer is fitted to (a random
    sample of them, drawn with `whitening_seed`); other models ignore them, and the fast_net settings.
    `for_training`: the network that trains, in `arch.train_layers` (job.train.fast_layers where "fused");
    otherwise (the network that is evaluated, exported and published) stock Keras layers always."""
    if arch.name == "seed_cnn":
        return seed_cnn(num_classes)
    if arch.name == "fast_net":
        fused = for_training and arch.train_layers == "fused"
        return fast_net(
            num_classes, arch.width, whitening_images, whitening_seed, arch.bn_momentum, arch.activation, fused
        )
    raise ValueError(f"unknown model {arch.name!r}")


def seed_cnn(num_classes: int = 10) -> keras.Sequential:
    """The reference recipe, layer for layer."""
    return keras.Sequential(
        [
            keras.Input(shape=(32, 32, 3), name="image"),
            layers.Conv2D(32, (3, 3), activation="relu"),
            layers.MaxPooling2D((2, 2)),
            layers.Conv2D(64, (3, 3), activation="relu"),
            layers.MaxPooling2D((2, 2)),
            layers.Conv2D(64, (3, 3), activation="relu"),
            layers.Flatten(),
            layers.Dense(64, activation="relu"),
            layers.Dropout(0.5),
            layers.Dense(num_classes, activation="softmax"),
        ],
        name="seed_cnn",
    )


# Per-channel statistics of the CIFAR-10 training images, for input whitening in fast_net.
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
WHITENING_PATCH = 2  # fast_net's first layer: a 2x2 patch-whitening convolution (airbench)
WHITEN = "whiten"  # its name; the optimizer never updates its kernel and trains its bias only briefly


def start_as_identity(conv: layers.Conv2D) -> None:
    """Make a built conv (kernel kh, kw, in, out) pass input channel i through to output channel i for the
    first min(in, out) outputs; the other outputs keep their random init. A fresh block then starts as
    (nearly) the identity, which lets a high learning rate work from the first step (airbench's dirac
    init). Done on the weights, not as a custom initializer, so saved models need no custom objects."""
    kernel = keras.ops.convert_to_numpy(conv.kernel).copy()
    kh, kw, cin, cout = kernel.shape
    n = min(cin, cout)
    kernel[..., :n] = 0.0
    kernel[kh // 2, kw // 2, np.arange(n), np.arange(n)] = 1.0
    conv.kernel.assign(kernel)


def whitening_kernel(
    images: np.ndarray, patch: int = WHITENING_PATCH, eps: float = 5e-4, max_images: int = 5000, seed: int = 0
) -> np.ndarray:
    """A (patch, patch, 3, 2*patch*patch*3) conv kernel that whitens image patches: the eigenvectors of the
    patch covariance of `images` (uint8, NHWC, after the per-channel standardisation fast_net applies; a
    random sample of `max_images` drawn with `seed` is plenty), scaled by 1/sqrt(eigenvalue), each with its
    negative so that the ReLU after it loses nothing."""
    if len(images) > max_images:
        images = images[np.sort(np.random.default_rng(seed).permutation(len(images))[:max_images])]
    x = (images.astype(np.float32) / 255.0 - np.array(CIFAR_MEAN, np.float32)) / np.array(CIFAR_STD, np.float32)
    n, h, w, c = x.shape
    patches = np.stack(
        [x[:, i : h - patch + 1 + i, j : w - patch + 1 + j, :] for i in range(patch) for j in range(patch)], axis=3
    ).reshape(-1, patch * patch * c)
    covariance = patches.T.astype(np.float64) @ patches / len(patches)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    filters = (eigenvectors / np.sqrt(eigenvalues + eps))[:, ::-1].reshape(patch, patch, c, -1)
    return np.concatenate([filters, -filters], axis=3).astype(np.float32)


def _bn(momentum: float, fused: bool = False):
    """No scale (the activation after it makes the scale redundant), eps 1e-12: airbench's settings.
    `momentum` is Keras' weight of the *old* running average (PyTorch's is the new batch's): airbench's
    `BatchNorm(momentum=0.6)` hands PyTorch 1 - 0.6, so the new batch weighs 0.4 and Keras' value is 0.6.
    The job used 0.4 (the opposite) until measured: width 64, 11 epochs, AMX Xeon, same seed, validation
    89.24 -> 89.69%, holdout 89.08 -> 89.44% (docs/performance.md has the screening table)."""
    kind = fast_layers.FusedBatchNorm if fused else layers.BatchNormalization
    return kind(momentum=momentum, epsilon=1e-12, scale=False)


# The head is fan-in uniform like every other layer, as in airbench (it was Keras' Glorot; measured in the
# screening table of docs/performance.md, together with the learning rate and the dropped partial batch).
HEAD_FAN_IN = True


def fan_in_uniform():
    """uniform +-1/sqrt(fan_in): PyTorch's default for conv and linear layers, which airbench keeps."""
    return keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform")


def _conv(x, filters: int, fused: bool = False):
    # fan-in uniform (PyTorch's default, as in airbench), then the identity on the first channels
    kind = fast_layers.MatmulGradConv2D if fused else layers.Conv2D
    conv = kind(filters, 3, padding="same", use_bias=False, kernel_initializer=fan_in_uniform())
    y = conv(x)
    start_as_identity(conv)
    return y


# GELU in its tanh form, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) = x * sigmoid(2 sqrt(2/pi) (x + 0.044715 x^3)),
# built from stock Keras layers: the exact (erf) form exports to ONNX as Erfc, which ONNX Runtime lacks, and a
# custom activation function would stop model.keras from loading with plain Keras.
_GELU_SCALE = 2 * math.sqrt(2 / math.pi)


def _gelu(x):
    cube = layers.Multiply()([x, x, x])
    inner = layers.Add()([layers.Rescaling(_GELU_SCALE)(x), layers.Rescaling(_GELU_SCALE * 0.044715)(cube)])
    return layers.Multiply()([x, layers.Activation("sigmoid")(inner)])


def _activation(name: str, x, fused: bool = False):
    if name == "gelu":
        return fast_layers.FusedGelu()(x) if fused else _gelu(x)
    return layers.Activation("relu")(x)


def fast_net(
    num_classes: int = 10,
    width: int = 64,
    whitening_images: np.ndarray | None = None,
    whitening_seed: int = 0,
    bn_momentum: float = 0.6,
    activation: str = "relu",
    fused: bool = False,
) -> keras.Model:
    """airbench-style network: patch-whitening stem, three blocks of (conv-pool-BN-act,
    conv-BN-act) with widths (w, 4w, 4w), global max-pool, a bias-free linear head with temperature.
    `fused`: BatchNorm, GELU and the 3x3 convolutions from job.train.fast_layers (training only; the same weights,
    in the same order)."""
    inputs = keras.Input(shape=(32, 32, 3), name="image")
    # Per-channel standardisation as constants (a Normalization layer's state would become extra ONNX inputs).
    x = layers.Rescaling(
        scale=[1 / s for s in CIFAR_STD], offset=[-m / s for m, s in zip(CIFAR_MEAN, CIFAR_STD, strict=True)]
    )(inputs)
    # Its kernel stays as fitted: BiasScaledSGD skips it (a frozen layer could not have a trainable bias).
    whiten = layers.Conv2D(2 * WHITENING_PATCH**2 * 3, WHITENING_PATCH, padding="valid", name=WHITEN)
    x = _activation(activation, whiten(x), fused)
    if whitening_images is not None:
        whiten.kernel.assign(whitening_kernel(whitening_images, seed=whitening_seed))
    for filters in (width, width * 4, width * 4):
        x = layers.MaxPooling2D(2)(_conv(x, filters, fused))
        x = _activation(activation, _bn(bn_momentum, fused)(x), fused)
        x = _conv(x, filters, fused)
        x = _activation(activation, _bn(bn_momentum, fused)(x), fused)
    x = layers.GlobalMaxPooling2D()(x)
    head_init = fan_in_uniform() if HEAD_FAN_IN else "glorot_uniform"
    logits = layers.Dense(num_classes, use_bias=False, kernel_initializer=head_init)(x)
    logits = layers.Rescaling(1 / 9)(logits)  # temperature: keeps early logits small, as in airbench
    outputs = layers.Activation("softmax", dtype="float32")(logits)
    return keras.Model(inputs, outputs, name="fast_net")

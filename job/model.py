"""Network architectures. Each takes float32 images scaled to [0, 1] and returns class probabilities."""

from __future__ import annotations

import keras
from keras import layers


def build(name: str, num_classes: int, width: int = 64) -> keras.Model:
    if name == "seed_cnn":
        return seed_cnn(num_classes)
    if name == "fast_net":
        return fast_net(num_classes, width)
    raise ValueError(f"unknown model {name!r}")


def seed_cnn(num_classes: int = 10) -> keras.Sequential:
    """The reference recipe, layer for layer."""
    return keras.Sequential([
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
    ], name="seed_cnn")


# Per-channel statistics of the CIFAR-10 training images, for input whitening in fast_net.
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def _conv_bn(x, filters: int):
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer="he_normal")(x)
    x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)
    return layers.Activation("relu")(x)


def fast_net(num_classes: int = 10, width: int = 64) -> keras.Model:
    """airbench-style conv-BN network: stem, three blocks of (conv-pool-BN-ReLU, conv-BN-ReLU), max-pool head."""
    inputs = keras.Input(shape=(32, 32, 3), name="image")
    # Per-channel whitening as constants (a Normalization layer's state would become extra ONNX inputs).
    x = layers.Rescaling(scale=[1 / s for s in CIFAR_STD], offset=[-m / s for m, s in zip(CIFAR_MEAN, CIFAR_STD)])(inputs)
    x = _conv_bn(x, width // 2)
    for filters in (width, width * 4, width * 4):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer="he_normal")(x)
        x = layers.MaxPooling2D(2)(x)
        x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)
        x = layers.Activation("relu")(x)
        x = _conv_bn(x, filters)
    x = layers.GlobalMaxPooling2D()(x)
    logits = layers.Dense(num_classes, use_bias=False)(x)
    logits = layers.Rescaling(1 / 8)(logits)  # temperature: keeps early logits small, as in airbench
    outputs = layers.Activation("softmax", dtype="float32")(logits)
    return keras.Model(inputs, outputs, name="fast_net")

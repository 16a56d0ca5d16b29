"""The inference function that is exported: raw uint8 RGB in, probabilities out, inference mode only."""

import tensorflow as tf

from job.contract import CHANNELS, IMAGE_HEIGHT, IMAGE_WIDTH, INPUT_NAME, OUTPUT_NAME

SIGNATURE = [tf.TensorSpec((None, IMAGE_HEIGHT, IMAGE_WIDTH, CHANNELS), tf.uint8, name=INPUT_NAME)]


def inference_function(model, tta_level: int = 0):
    """A tf.function over `model(x, training=False)`: the training graph (dropout, BN updates) never leaks.
    Test-time augmentation, airbench's levels: 1 averages with the mirrored image; 2 (airbench94's second level)
    also averages, with equal weight, the mirrored pair of the image shifted one pixel each way along both axes
    (reflect padding): 6 forward passes instead of 2."""
    tta, translate = tta_level >= 1, tta_level >= 2

    def mirrored(x):
        probs = model(x, training=False)
        return 0.5 * (probs + model(tf.reverse(x, axis=[2]), training=False)) if tta else probs

    @tf.function(input_signature=SIGNATURE)
    def serve(image):
        x = tf.cast(image, tf.float32) / 255.0
        probs = mirrored(x)
        if translate:
            padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="REFLECT")
            shifted = 0.5 * (mirrored(padded[:, :-2, :-2]) + mirrored(padded[:, 2:, 2:]))
            probs = 0.5 * (probs + shifted)
        return {OUTPUT_NAME: tf.cast(probs, tf.float32)}

    return serve


def predict(fn, images, batch_size: int = 512):
    """Run the exported function eagerly over uint8 images, in batches (the Keras reference)."""
    import numpy as np

    out = [fn(tf.constant(images[i : i + batch_size]))[OUTPUT_NAME].numpy() for i in range(0, len(images), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

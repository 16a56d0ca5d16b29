"""Training precision as a scope: Keras' global dtype policy is set while a model is built and restored after,
so nothing outside training (the float32 exports, the bench, tests) inherits it."""

import contextlib
import logging

import keras

from job.runtime.resources import auto_precision

log = logging.getLogger(__name__)


@contextlib.contextmanager
def precision_policy(name: str):
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def warn_if_emulated(precision: str) -> None:
    if precision == "mixed_bfloat16" and auto_precision()[0] != precision:
        log.warning(
            "precision mixed_bfloat16 on a CPU without bf16 units (AMX, AVX512_BF16): emulated, measured about 12x "
            "slower than float32; use --precision auto"
        )


def model_precision(net: keras.Model) -> str:
    """The policy `net` was built under, read from its convolutions (its softmax is float32 always)."""
    convs = [layer for layer in net.layers if isinstance(layer, keras.layers.Conv2D)]
    return convs[0].dtype_policy.name if convs else "float32"

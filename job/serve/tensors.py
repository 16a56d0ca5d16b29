"""Tensors from a request -> the contract's input, uint8 [N, 32, 32, 3], or HTTPError 400/413.

Every value is checked before it reaches ONNX Runtime: integers only (no booleans, floats, strings or
objects), each 0..255, a shape of exactly [N, 32, 32, 3] (or one [32, 32, 3] image where a protocol allows it),
N from 1 to the server's batch bound, and as many values as the shape says.
"""

import math

import numpy as np

from job.contract import CHANNELS, IMAGE_HEIGHT, IMAGE_WIDTH
from job.serve.http import HTTPError

IMAGE_SHAPE = (IMAGE_HEIGHT, IMAGE_WIDTH, CHANNELS)


def check_shape(shape, max_batch: int, what: str) -> tuple[int, ...]:
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise HTTPError(400, f"{what}: shape must be a list of integers")
    if len(shape) != 4 or tuple(shape[1:]) != IMAGE_SHAPE or shape[0] < 1:
        raise HTTPError(400, f"{what}: shape must be [N, 32, 32, 3] with N >= 1, is {shape[:8]}")
    batch_bound(shape[0], max_batch, what)
    return tuple(shape)


def batch_bound(n: int, max_batch: int, what: str) -> None:
    if n > max_batch:
        raise HTTPError(413, f"{what}: {n} images in one request; the limit is {max_batch}")


def from_values(data, shape: tuple[int, ...] | None, max_batch: int, what: str) -> np.ndarray:
    """JSON numbers (flat, or nested as the shape) -> uint8 [N, 32, 32, 3]. Without `shape`, the nesting is the
    shape: [N, 32, 32, 3], or [32, 32, 3] for one image."""
    if not isinstance(data, list):
        raise HTTPError(400, f"{what}: expected a JSON array of pixel values")
    try:
        array = np.asarray(data)
    except (ValueError, OverflowError, TypeError):  # ragged nesting, numbers numpy cannot hold
        raise HTTPError(400, f"{what}: not a regular array of numbers") from None
    if array.dtype.kind not in "iu":
        raise HTTPError(400, f"{what}: pixel values must be integers 0..255, found {array.dtype.kind!r} values")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise HTTPError(400, f"{what}: pixel values must be 0..255")
    if shape is None:
        if array.shape == IMAGE_SHAPE:
            array = array[None]
        check_shape(list(array.shape), max_batch, what)
    elif array.size != math.prod(shape):
        raise HTTPError(400, f"{what}: {array.size} values for shape {list(shape)}")
    return array.astype(np.uint8).reshape(shape or array.shape)


def from_bytes(raw: bytes, shape: tuple[int, ...], what: str) -> np.ndarray:
    """Raw UINT8 bytes (the v2 binary tensor extension) -> uint8 of `shape` (already checked)."""
    if len(raw) != math.prod(shape):
        raise HTTPError(400, f"{what}: {len(raw)} bytes for shape {list(shape)} (uint8: one byte per value)")
    return np.frombuffer(raw, np.uint8).reshape(shape)

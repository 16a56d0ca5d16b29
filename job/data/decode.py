"""Image bytes -> uint8 [N, 32, 32, 3], in worker processes for large sets (50,000 JPEGs: 2 processes)."""

import io
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from job.data.dataset import IMAGE_SIZE
from job.data.entries import read_entry
from job.errors import DataError

CHUNK = 2048
PARALLEL_FROM = 4000  # below this, starting worker processes costs more than it saves


def decode_split(path: Path, classes: dict[str, list], class_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """classes: class name -> [(entry name, handle)]. Labels follow `class_names`' order."""
    items = [
        (name, read_entry(handle), class_names.index(cls))
        for cls, entries in sorted(classes.items())
        for name, handle in entries
    ]
    names = [i[0] for i in items]
    blobs = [i[1] for i in items]
    labels = np.array([i[2] for i in items], dtype=np.int64)
    chunks = [(names[i : i + CHUNK], blobs[i : i + CHUNK]) for i in range(0, len(blobs), CHUNK)]
    workers = _workers(len(blobs))
    if workers > 1:
        pool = ProcessPoolExecutor(workers)
        try:
            results = list(pool.map(_decode_chunk, chunks))
        finally:  # on a signal, do not wait for the chunks still queued
            pool.shutdown(wait=True, cancel_futures=True)
    else:
        results = [_decode_chunk(c) for c in chunks]
    errors = [e for _, errs in results for e in errs]
    if errors:
        more = f" (and {len(errors) - 1} more bad file(s))" if len(errors) > 1 else ""
        raise DataError(f"{path}: {errors[0]}{more}; fix or remove the file(s)")
    return np.concatenate([r[0] for r in results]), labels


def _workers(n: int) -> int:
    if n < PARALLEL_FROM:
        return 1
    from job.runtime.resources import available_cpus

    return available_cpus()


def _decode_chunk(chunk: tuple[list[str], list[bytes]]) -> tuple[np.ndarray, list[str]]:
    from PIL import Image, UnidentifiedImageError

    names, blobs = chunk
    out = np.zeros((len(blobs), *IMAGE_SIZE, 3), dtype=np.uint8)
    errors = []
    for i, (name, blob) in enumerate(zip(names, blobs, strict=True)):
        try:
            with Image.open(io.BytesIO(blob)) as im:
                if im.size != IMAGE_SIZE:  # checked from the header, before any pixel is decoded (no bombs)
                    errors.append(f"{name} is {im.size[0]}x{im.size[1]}, expected 32x32")
                    continue
                im.load()
                out[i] = np.asarray(im.convert("RGB"))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            errors.append(f"{name} is not a readable image ({exc})")
    return out, errors

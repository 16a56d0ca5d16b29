"""Image bytes -> uint8 [N, 32, 32, 3], in worker processes for large sets (50,000 JPEGs: 2 processes)."""

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from job.data.dataset import IMAGE_SIZE
from job.data.entries import read_entry
from job.errors import DataError
from job.runtime.signals import child_signals, signals_held

CHUNK = 2048
TRAINING_FORMATS = ("PNG", "JPEG")  # the data sources take .png, .jpg and .jpeg names; the bytes must agree
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
        results = _decode_in_pool(chunks, workers)
    else:
        results = [_decode_chunk(c) for c in chunks]
    errors = [e for _, errs in results for e in errs]
    if errors:
        more = f" (and {len(errors) - 1} more bad file(s))" if len(errors) > 1 else ""
        raise DataError(f"{path}: {errors[0]}{more}; fix or remove the file(s)")
    return np.concatenate([r[0] for r in results]), labels


def _decode_in_pool(chunks: list, workers: int) -> list:
    """The chunks decoded by `workers` processes. The pool forks them all at its first submit, with SIGTERM/SIGINT
    held (job.runtime.signals: a signal handled during a fork is dropped by CPython, and the run went on to
    publish); one that arrived meanwhile is raised right after. On a signal the pool is shut down without
    waiting for the chunks still queued, its own finalizers again with the signals held."""
    pool = ProcessPoolExecutor(workers, initializer=child_signals)
    try:
        with signals_held():
            futures = [pool.submit(_decode_chunk, chunk) for chunk in chunks]
        return [future.result() for future in futures]
    finally:
        with signals_held():
            pool.shutdown(wait=True, cancel_futures=True)
            pool = None


def _workers(n: int) -> int:
    if n < PARALLEL_FROM:
        return 1
    from job.runtime.resources import available_cpus

    return available_cpus()


def _decode_chunk(chunk: tuple[list[str], list[bytes]]) -> tuple[np.ndarray, list[str]]:
    """The image gate (job.gates.images) on each image: PNG or JPEG by its bytes, exactly 32x32 from its header
    (nothing decoded otherwise), then the one preprocessing rule the predictor, the server and the page apply."""
    from job.gates.images import ImageRejected, model_input

    names, blobs = chunk
    out = np.zeros((len(blobs), *IMAGE_SIZE, 3), dtype=np.uint8)
    errors = []
    for i, (name, blob) in enumerate(zip(names, blobs, strict=True)):
        try:
            out[i], _ = model_input(blob, name, size=IMAGE_SIZE, resize=False, formats=TRAINING_FORMATS)
        except ImageRejected as exc:
            errors.append(str(exc))
    return out, errors

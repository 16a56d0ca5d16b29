"""The verification gate: SavedModel and ONNX Runtime must predict what Keras predicts.

Compared on the whole test split plus random uint8 batches of several sizes (dynamic batch check).
A backend fails when max |Δprob| exceeds the tolerance or any argmax differs.
"""

from dataclasses import dataclass

import numpy as np

from job.contract import INPUT_NAME, OUTPUT_NAME

RANDOM_BATCH_SIZES = (1, 7, 256)


@dataclass
class Comparison:
    backend: str
    samples: int
    max_abs_diff: float
    argmax_agreement: float
    argmax_mismatches: int

    def ok(self, tolerance: float) -> bool:
        return self.max_abs_diff <= tolerance and self.argmax_mismatches == 0

    def as_dict(self) -> dict:
        return {
            "samples": self.samples,
            "max_abs_diff": self.max_abs_diff,
            "argmax_agreement": self.argmax_agreement,
            "argmax_mismatches": self.argmax_mismatches,
        }


def parity_inputs(test_images: np.ndarray, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    batches = [test_images]
    batches += [rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8) for n in RANDOM_BATCH_SIZES]
    return batches


def compare(backend: str, reference: list[np.ndarray], candidate: list[np.ndarray]) -> Comparison:
    ref, cand = np.concatenate(reference), np.concatenate(candidate)
    if ref.shape != cand.shape:
        return Comparison(backend, len(ref), float("inf"), 0.0, len(ref))
    diff = float(np.max(np.abs(ref - cand))) if ref.size else 0.0
    if not np.isfinite(cand).all():
        diff = float("inf")
    agree = ref.argmax(axis=1) == cand.argmax(axis=1)
    return Comparison(backend, len(ref), diff, float(agree.mean()) if len(agree) else 1.0, int((~agree).sum()))


def run_onnx(session, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    outs = [
        session.run([OUTPUT_NAME], {INPUT_NAME: images[i : i + batch_size]})[0]
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


@dataclass(frozen=True)
class Parity:
    """What the verification gate measured. `as_dict()` is metrics.json's "parity"."""

    onnxruntime: Comparison
    savedmodel: Comparison
    tolerance: float
    random_batch_sizes: list[int]
    onnx_test_accuracy: float
    onnx_test_probs: np.ndarray

    def as_dict(self) -> dict:
        return {
            "onnxruntime": self.onnxruntime.as_dict(),
            "savedmodel": self.savedmodel.as_dict(),
            "tolerance": self.tolerance,
            "random_batch_sizes": self.random_batch_sizes,
        }

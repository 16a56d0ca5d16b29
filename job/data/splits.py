"""Deterministic stratified splits: (optional limit) -> test holdout (if the source has none) -> validation.

The test split is carved first and is never used for training or for choosing anything; the
validation split only draws the curves.
"""

import numpy as np

from job.data.dataset import Dataset, Splits
from job.errors import DataError


def split(dataset: Dataset, *, val_fraction: float, test_fraction: float, seed: int, limit: int = 0) -> Splits:
    """Stratified, deterministic: (optional limit) -> test holdout (if the source has none) -> validation."""
    rng = np.random.default_rng(seed)
    x, y = dataset.x_train, dataset.y_train
    x_test, y_test = dataset.x_test, dataset.y_test
    if limit:
        keep = stratified_subsample(y, limit, rng)
        x, y = x[keep], y[keep]
        if x_test is not None:
            keep = stratified_subsample(y_test, max(len(dataset.class_names), round(limit * test_fraction)), rng)
            x_test, y_test = x_test[keep], y_test[keep]
    test_source = "source test split"
    if x_test is None:
        rest, held = stratified_split(y, test_fraction, rng)
        x_test, y_test = x[held], y[held]
        x, y = x[rest], y[rest]
        test_source = f"stratified holdout ({test_fraction:.0%} of the source)"
    if val_fraction > 0:
        rest, val = stratified_split(y, val_fraction, rng)
    else:  # no validation split: a final model trained on everything but the test split
        rest, val = np.arange(len(y)), np.arange(0)
    splits = Splits(x[rest], y[rest], x[val], y[val], x_test, y_test, list(dataset.class_names))
    for name, labels in (("train", splits.y_train), ("val", splits.y_val), ("test", splits.y_test)):
        if len(labels) == 0 and not (name == "val" and val_fraction == 0):
            raise DataError(f"the {name} split is empty; use more data or a larger --limit")
    splits.info = {
        "source": dataset.source,
        "source_sha256": dataset.sha256,
        "test_split": test_source,
        "sizes": {"train": len(splits.y_train), "val": len(splits.y_val), "test": len(splits.y_test)},
        "class_names": splits.class_names,
        "seed": seed,
        "limit": limit,
        "test_fingerprint": test_fingerprint(splits.x_test, splits.y_test),
    }
    return splits


def test_fingerprint(x: np.ndarray, y: np.ndarray) -> str:
    """sha256 over the sorted per-image hashes (pixels and label) of a test split: two runs were evaluated on
    the same images exactly when their fingerprints are equal, whatever the order (the baseline gate)."""
    import hashlib

    digests = sorted(
        hashlib.sha256(img.tobytes() + int(label).to_bytes(2, "little")).digest()
        for img, label in zip(x, y, strict=True)
    )
    return hashlib.sha256(b"".join(digests)).hexdigest()


def stratified_split(y: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, taken): `fraction` of every class taken (at least one where the class has two)."""
    kept, taken = [], []
    for cls in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == cls))
        n = int(round(len(idx) * fraction))
        if len(idx) >= 2:
            n = min(max(n, 1), len(idx) - 1)
        taken.append(idx[:n])
        kept.append(idx[n:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(taken))


def stratified_subsample(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    if n >= len(y):
        return np.arange(len(y))
    _, taken = stratified_split(y, n / len(y), rng)
    return taken

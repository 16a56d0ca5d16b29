"""data: sources -> decoded uint8 arrays (cached) -> stratified splits."""

from pathlib import Path

from job.config.parts import DataConfig
from job.data.dataset import CIFAR10_CLASSES, IMAGE_SIZE, Dataset, Splits
from job.data.sources import default_cache_dir, load
from job.data.splits import split


def load_splits(data: DataConfig, s3_options=None) -> Splits:
    """The splits a config trains and evaluates on (the job, and every bench that must see the same images):
    `data.source` loaded (from the decode cache when possible), then split by its fractions, seed and limit."""
    dataset = load(data.source, Path(data.cache_dir) if data.cache_dir else None, s3_options)
    splits = split(
        dataset, val_fraction=data.val_fraction, test_fraction=data.test_fraction, seed=data.seed, limit=data.limit
    )
    splits.info["from_cache"] = dataset.from_cache
    return splits


__all__ = ["CIFAR10_CLASSES", "IMAGE_SIZE", "Dataset", "Splits", "default_cache_dir", "load", "load_splits", "split"]

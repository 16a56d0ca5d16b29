"""data: sources -> decoded uint8 arrays (cached) -> stratified splits."""

from pathlib import Path

from job.config import Config
from job.data.dataset import CIFAR10_CLASSES, IMAGE_SIZE, Dataset, Splits
from job.data.sources import default_cache_dir, load
from job.data.splits import split


def load_splits(cfg: Config, s3_options=None) -> Splits:
    """The splits a config trains and evaluates on (the job, and every bench that must see the same images):
    `cfg.data` loaded (from the decode cache when possible), then split by `cfg`'s fractions, seed and limit."""
    dataset = load(cfg.data, Path(cfg.cache_dir) if cfg.cache_dir else None, s3_options)
    splits = split(
        dataset, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, seed=cfg.seed, limit=cfg.limit
    )
    splits.info["from_cache"] = dataset.from_cache
    return splits


__all__ = ["CIFAR10_CLASSES", "IMAGE_SIZE", "Dataset", "Splits", "default_cache_dir", "load", "load_splits", "split"]

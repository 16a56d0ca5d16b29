"""data: sources -> decoded uint8 arrays (cached) -> stratified splits."""

from job.data.dataset import CIFAR10_CLASSES, IMAGE_SIZE, Dataset, Splits
from job.data.sources import default_cache_dir, load
from job.data.splits import split

__all__ = ["CIFAR10_CLASSES", "IMAGE_SIZE", "Dataset", "Splits", "default_cache_dir", "load", "split"]

"""What a data source loads into: uint8 NHWC arrays, integer labels, class names; and the three splits."""

from dataclasses import dataclass, field

import numpy as np

IMAGE_SIZE = (32, 32)
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@dataclass
class Dataset:
    """A loaded source. x_* are uint8 [N, 32, 32, 3]; y_* int64 class ids; test may be absent."""

    x_train: np.ndarray
    y_train: np.ndarray
    class_names: list[str]
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    source: str = ""
    sha256: str = ""
    from_cache: bool = False


@dataclass
class Splits:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    info: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

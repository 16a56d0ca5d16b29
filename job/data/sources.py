"""Data sources -> a Dataset of uint8 NHWC arrays and class names.

Sources (`--data`):
  keras                      keras.datasets.cifar10.load_data() (downloads; the original recipe)
  cifar-10-python.tar.gz     the official archive, or its extracted cifar-10-batches-py/ folder
  image-folder tree          folder / .tar / .tar.gz with train/<class>/*.{jpg,jpeg,png}, optional test/<class>/*
  s3://bucket/key            one of the above in S3 (downloaded into the cache first: job.storage.s3download)

Archives are read member by member in memory (job.data.entries: nothing extracted, unsafe or oversized
entries refused). Decoded arrays are cached by the source's sha256 (job.data.cache).
"""

import io
import logging
import os
import pickle
from pathlib import Path, PurePosixPath

import numpy as np

from job.data.cache import read_cache, source_sha256, write_cache
from job.data.dataset import CIFAR10_CLASSES, Dataset
from job.data.decode import decode_split
from job.data.entries import check_regular_file, is_tar, iter_folder, iter_tar, read_entry
from job.data.tree import IMAGE_EXTENSIONS, LAYOUT_HINT, check_cifar_python, image_tree, is_cifar_python
from job.errors import DataError
from job.gates.class_names import check_class_names

log = logging.getLogger(__name__)

__all__ = ["IMAGE_EXTENSIONS", "LAYOUT_HINT", "default_cache_dir", "load", "local_source", "resolve_auto"]
MAX_SOURCE_BYTES = 64 * 1024**3  # an archive of 64 GiB is not CIFAR-10: refuse it before hashing it
SHARED_DATA_NAME = Path("shared") / "data" / "cifar10-jpeg-train.tar.gz"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cifar10-job"


def resolve_auto(spec: str) -> str:
    """'auto' = the shared JPEG archive beside the checkout (or the working directory), else 'keras'."""
    if spec != "auto":
        return spec
    for root in (Path(__file__).resolve().parents[3], Path.cwd().parent, Path.cwd()):
        if (root / SHARED_DATA_NAME).is_file():
            return str(root / SHARED_DATA_NAME)
    return "keras"


def load(spec: str, cache_dir: Path | None = None, s3_options=None) -> Dataset:
    """Load a source spec into arrays (from the decode cache when possible)."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    spec = resolve_auto(spec)
    if spec == "keras":
        return _load_keras()
    if spec.startswith("s3://"):
        from job.storage.s3download import download_source

        spec = str(download_source(spec, cache_dir, s3_options))
    path = local_source(spec)
    digest = source_sha256(path)
    cached = read_cache(cache_dir, digest)
    if cached is not None:
        check_class_names(cached.class_names, f"decode cache of {path}")  # a cache written before the gate existed
        cached.source, cached.from_cache = str(path), True
        return cached
    dataset = _load_path(path)
    dataset.source, dataset.sha256 = str(path), digest
    write_cache(cache_dir, digest, dataset)
    return dataset


def local_source(spec: str) -> Path:
    """The path of a local source (a folder or a tar archive), checked as the run and the dry run check it."""
    path = Path(spec)
    if not path.exists():
        raise DataError(
            f"data source {spec!r} does not exist; pass --data with a folder, .tar/.tar.gz, "
            f"s3:// URI or 'keras' ({LAYOUT_HINT})"
        )
    if not path.is_dir():
        check_regular_file(path, limit=MAX_SOURCE_BYTES)  # a FIFO or device (/dev/zero) is refused, not read
        if not is_tar(path):
            raise DataError(f"data source {spec!r} is not a folder or a .tar/.tar.gz archive; {LAYOUT_HINT}")
    return path


def _load_keras() -> Dataset:
    try:
        from keras.datasets import cifar10

        (x_train, y_train), (x_test, y_test) = cifar10.load_data()
    except Exception as exc:  # no network, proxy, truncated download...
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise DataError(
            f"--data keras: could not download CIFAR-10 ({reason}); offline, pass --data with a "
            "local cifar-10-python.tar.gz, an image-folder tree (.tar.gz or folder) or an s3:// URI"
        ) from None
    return Dataset(
        x_train,
        y_train.reshape(-1).astype(np.int64),
        list(CIFAR10_CLASSES),
        x_test,
        y_test.reshape(-1).astype(np.int64),
        source="keras",
        sha256="keras",
    )


def _load_path(path: Path) -> Dataset:
    entries = list(iter_folder(path) if path.is_dir() else iter_tar(path))
    if is_cifar_python([n for n, _ in entries]):
        return _load_cifar_python(path, entries)
    return _load_image_tree(path, entries)


class _CifarUnpickler(pickle.Unpickler):
    """CIFAR batches are pickles: allow only what they contain (dicts, lists, bytes, numpy arrays)."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"forbidden global {module}.{name}")


def _load_cifar_python(path: Path, entries) -> Dataset:
    check_cifar_python(path, [n for n, _ in entries])  # the batches, by name, as the dry run checks them
    by_name = {PurePosixPath(n).name: h for n, h in entries if not n.endswith("/")}

    def batch(name: str) -> dict:
        try:
            return _CifarUnpickler(io.BytesIO(read_entry(by_name[name])), encoding="bytes").load()
        except KeyError:
            raise DataError(f"{path}: missing {name}; not a complete cifar-10-batches-py set") from None
        except Exception as exc:
            raise DataError(f"{path}: {name} is not a valid CIFAR batch ({exc})") from None

    def arrays(b: dict) -> tuple[np.ndarray, np.ndarray]:
        try:
            x = np.asarray(b[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            return np.ascontiguousarray(x), np.asarray(b[b"labels"], dtype=np.int64)
        except Exception as exc:
            raise DataError(f"{path}: malformed CIFAR batch ({exc})") from None

    meta = batch("batches.meta")
    if not isinstance(meta, dict):
        raise DataError(f"{path}: batches.meta is not a valid CIFAR batch (not a dict)")
    labels = meta.get(b"label_names", [])
    if not isinstance(labels, (list, tuple)):
        raise DataError(f"{path}: batches.meta label_names is not a list")
    class_names = [c.decode("utf-8", "surrogateescape") if isinstance(c, bytes) else c for c in labels]
    if class_names:  # the class-name gate: labels.txt lines, predict --json keys, log lines, the page
        check_class_names(class_names, f"{path}: batches.meta label_names")
    train = [arrays(batch(f"data_batch_{i}")) for i in range(1, 6)]
    x_test, y_test = arrays(batch("test_batch")) if "test_batch" in by_name else (None, None)
    return Dataset(
        np.concatenate([t[0] for t in train]),
        np.concatenate([t[1] for t in train]),
        class_names or list(CIFAR10_CLASSES),
        x_test,
        y_test,
    )


def _load_image_tree(path: Path, entries) -> Dataset:
    handles = dict(entries)
    class_names, splits = image_tree(path, [n for n, _ in entries])  # the layout, from the names alone
    x_train, y_train = decode_split(path, _handles(splits["train"], handles), class_names)
    x_test = y_test = None
    if splits["test"]:
        x_test, y_test = decode_split(path, _handles(splits["test"], handles), class_names)
    return Dataset(x_train, y_train, class_names, x_test, y_test)


def _handles(classes: dict[str, list[str]], handles: dict) -> dict[str, list]:
    return {cls: [(name, handles[name]) for name in names] for cls, names in classes.items()}

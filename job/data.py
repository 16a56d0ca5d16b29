"""Data sources -> uint8 NHWC arrays + class names -> deterministic stratified splits.

Sources (`--data`):
  keras                      keras.datasets.cifar10.load_data() (downloads; the original recipe)
  cifar-10-python.tar.gz     the official archive, or its extracted cifar-10-batches-py/ folder
  image-folder tree          folder / .tar / .tar.gz with train/<class>/*.{jpg,jpeg,png}, optional test/<class>/*
  s3://bucket/key            one of the above in S3 (downloaded into the cache first; see job.s3)

Archives are read member by member in memory: nothing is extracted, and entries with absolute paths,
`..` components, links or device files are refused. Decoded arrays are cached under the cache dir,
keyed by the sha256 of the source, so a second run does not decode again.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import tarfile
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterator

import numpy as np

from job.errors import DataError

log = logging.getLogger(__name__)

IMAGE_SIZE = (32, 32)
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png"}
CACHE_FORMAT = "v1"
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
SHARED_DATA_NAME = Path("shared") / "data" / "cifar10-jpeg-train.tar.gz"
LAYOUT_HINT = ("expected train/<class>/*.jpg|png (and optionally test/<class>/*), "
               "a cifar-10-python.tar.gz archive or cifar-10-batches-py/ folder, or 'keras'")


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


# ----------------------------------------------------------------------------- public entry points

def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cifar10-job"


def resolve_auto(spec: str) -> str:
    """'auto' = the shared JPEG archive beside the checkout (or the working directory), else 'keras'."""
    if spec != "auto":
        return spec
    for root in (Path(__file__).resolve().parent.parent.parent, Path.cwd().parent, Path.cwd()):
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
        from job import s3
        spec = str(s3.download_source(spec, cache_dir, s3_options))
    path = Path(spec)
    if not path.exists():
        raise DataError(f"data source {spec!r} does not exist; pass --data with a folder, .tar/.tar.gz, "
                        f"s3:// URI or 'keras' ({LAYOUT_HINT})")
    if path.is_file() and not tarfile.is_tarfile(path):
        raise DataError(f"data source {spec!r} is not a folder or a .tar/.tar.gz archive; {LAYOUT_HINT}")

    digest = source_sha256(path)
    cached = _read_cache(cache_dir, digest)
    if cached is not None:
        cached.source, cached.from_cache = str(path), True
        return cached
    dataset = _load_path(path)
    dataset.source, dataset.sha256 = str(path), digest
    _write_cache(cache_dir, digest, dataset)
    return dataset


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
    rest, val = stratified_split(y, val_fraction, rng)
    splits = Splits(x[rest], y[rest], x[val], y[val], x_test, y_test, list(dataset.class_names))
    for name, labels in (("train", splits.y_train), ("val", splits.y_val), ("test", splits.y_test)):
        if len(labels) == 0:
            raise DataError(f"the {name} split is empty; use more data or a larger --limit")
    splits.info = {
        "source": dataset.source, "source_sha256": dataset.sha256, "test_split": test_source,
        "sizes": {"train": len(splits.y_train), "val": len(splits.y_val), "test": len(splits.y_test)},
        "class_names": splits.class_names, "seed": seed, "limit": limit,
    }
    return splits


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


# ----------------------------------------------------------------------------- hashing and cache

def source_sha256(path: Path) -> str:
    """sha256 of a file, or of a folder tree (relative paths + contents, in sorted order)."""
    if path.is_file():
        from job.manifest import sha256_file
        return sha256_file(path)
    h = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(file.relative_to(path).as_posix().encode() + b"\0")
        h.update(file.read_bytes())
    return h.hexdigest()


def _cache_file(cache_dir: Path, digest: str) -> Path:
    return cache_dir / f"decoded-{digest[:32]}-{CACHE_FORMAT}.npz"


def _read_cache(cache_dir: Path, digest: str) -> Dataset | None:
    file = _cache_file(cache_dir, digest)
    if not file.is_file():
        return None
    try:
        with np.load(file, allow_pickle=False) as z:
            has_test = bool(z["has_test"])
            return Dataset(z["x_train"], z["y_train"], [str(c) for c in z["class_names"]],
                           z["x_test"] if has_test else None, z["y_test"] if has_test else None,
                           sha256=digest)
    except Exception as exc:  # a torn or foreign cache file is not fatal: decode again
        log.warning("ignoring unreadable cache file %s (%s)", file, exc)
        return None


def _write_cache(cache_dir: Path, digest: str, ds: Dataset) -> None:
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        empty = np.zeros((0, *IMAGE_SIZE, 3), np.uint8)
        fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".npz.tmp")
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, x_train=ds.x_train, y_train=ds.y_train, class_names=np.array(ds.class_names),
                     has_test=np.array(ds.x_test is not None),
                     x_test=ds.x_test if ds.x_test is not None else empty,
                     y_test=ds.y_test if ds.y_test is not None else np.zeros(0, np.int64))
        os.replace(tmp, _cache_file(cache_dir, digest))
    except OSError as exc:  # a read-only cache must not fail the run
        log.warning("could not write the data cache in %s (%s); the next run decodes again", cache_dir, exc)


# ----------------------------------------------------------------------------- keras

def _load_keras() -> Dataset:
    try:
        from keras.datasets import cifar10
        (x_train, y_train), (x_test, y_test) = cifar10.load_data()
    except Exception as exc:  # no network, proxy, truncated download...
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise DataError(f"--data keras: could not download CIFAR-10 ({reason}); offline, pass --data with a "
                        "local cifar-10-python.tar.gz, an image-folder tree (.tar.gz or folder) or an s3:// URI"
                        ) from None
    return Dataset(x_train, y_train.reshape(-1).astype(np.int64), list(CIFAR10_CLASSES),
                   x_test, y_test.reshape(-1).astype(np.int64), source="keras", sha256="keras")


# ----------------------------------------------------------------------------- files: folders and tars

def _load_path(path: Path) -> Dataset:
    names = list(_list_entries(path))
    if any(PurePosixPath(n).name == "data_batch_1" for n, _ in names):
        return _load_cifar_python(path, names)
    return _load_image_tree(path, names)


def _list_entries(path: Path) -> Iterator[tuple[str, object]]:
    """(relative posix name, handle) for every entry; a handle is a Path, or member bytes for a tar."""
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            rel = p.relative_to(path).as_posix()
            if p.is_symlink():
                raise DataError(f"{path}: {rel} is a symbolic link; links are refused, copy the file instead")
            yield (rel + "/" if p.is_dir() else rel), p
        return
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                name = safe_member_name(path, member)
                if member.isdir():
                    yield name.rstrip("/") + "/", None
                else:
                    handle = tar.extractfile(member)
                    yield name, handle.read() if handle else b""
    except DataError:
        raise
    except Exception as exc:  # tarfile.TarError, EOFError, zlib/gzip errors, OSError...
        raise DataError(f"{path}: unreadable archive ({exc}); re-download or re-create it") from None


def safe_member_name(archive: Path, member: tarfile.TarInfo) -> str:
    name = member.name
    parts = PurePosixPath(name).parts
    if name.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
        raise DataError(f"{archive}: unsafe entry {name!r} (absolute path or '..'); refusing the archive")
    if member.issym() or member.islnk():
        raise DataError(f"{archive}: entry {name!r} is a link; archives with links are refused")
    if not (member.isfile() or member.isdir()):
        raise DataError(f"{archive}: entry {name!r} is not a regular file or folder; refusing the archive")
    return "/".join(p for p in parts if p != ".")


def _read(handle) -> bytes:
    return handle.read_bytes() if isinstance(handle, Path) else handle


class _CifarUnpickler(pickle.Unpickler):
    """CIFAR batches are pickles: allow only what they contain (dicts, lists, bytes, numpy arrays)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"forbidden global {module}.{name}")


def _load_cifar_python(path: Path, entries) -> Dataset:
    by_name = {PurePosixPath(n).name: h for n, h in entries if not n.endswith("/")}

    def batch(name: str) -> dict:
        try:
            return _CifarUnpickler(io.BytesIO(_read(by_name[name])), encoding="bytes").load()
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
    class_names = [c.decode() if isinstance(c, bytes) else str(c) for c in meta.get(b"label_names", [])]
    train = [arrays(batch(f"data_batch_{i}")) for i in range(1, 6)]
    x_test, y_test = arrays(batch("test_batch")) if "test_batch" in by_name else (None, None)
    return Dataset(np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train]),
                   class_names or list(CIFAR10_CLASSES), x_test, y_test)


def _load_image_tree(path: Path, entries) -> Dataset:
    entries = list(entries)
    prefix = _tree_prefix(path, [n for n, _ in entries])
    splits: dict[str, dict[str, list]] = {"train": {}, "test": {}}
    for name, handle in entries:
        if not name.startswith(prefix):
            continue
        parts = name[len(prefix):].rstrip("/").split("/")
        is_dir = name.endswith("/")
        if parts[0] not in splits or (len(parts) == 1):
            continue  # README, LICENSE... beside train/ and test/
        split_name, cls = parts[0], parts[1]
        if cls.startswith("."):
            continue
        classes = splits[split_name]
        if len(parts) == 2:
            if is_dir:
                classes.setdefault(cls, [])
                continue
            raise DataError(f"{path}: {name} is a file directly in {split_name}/; images belong in "
                            f"{split_name}/<class>/")
        if is_dir:
            raise DataError(f"{path}: unexpected sub-folder {name}; images belong directly in {split_name}/<class>/")
        file_name = parts[-1]
        if file_name.startswith("."):
            continue
        if len(parts) > 3:
            raise DataError(f"{path}: unexpected nesting at {name}; images belong directly in {split_name}/<class>/")
        if PurePosixPath(file_name).suffix.lower() not in IMAGE_EXTENSIONS:
            raise DataError(f"{path}: unsupported file {name} (expected .jpg, .jpeg or .png)")
        classes.setdefault(cls, []).append((name, handle))

    class_names = sorted(splits["train"])
    if len(class_names) < 2:
        raise DataError(f"{path}: found {len(class_names)} class folder(s) under train/; need at least 2. {LAYOUT_HINT}")
    for split_name, classes in splits.items():
        for cls, items in classes.items():
            if not items:
                raise DataError(f"{path}: class folder {split_name}/{cls}/ is empty; add images or remove it")
    unknown = sorted(set(splits["test"]) - set(class_names))
    if unknown:
        raise DataError(f"{path}: test/ has class folder(s) {', '.join(unknown)} that train/ does not have")

    x_train, y_train = _decode_split(path, splits["train"], class_names)
    x_test = y_test = None
    if splits["test"]:
        x_test, y_test = _decode_split(path, splits["test"], class_names)
    return Dataset(x_train, y_train, class_names, x_test, y_test)


def _tree_prefix(path: Path, names: list[str]) -> str:
    """'' when train/ is at the root; 'top/' when the archive wraps everything in one folder."""
    if any(n == "train/" or n.startswith("train/") for n in names):
        return ""
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) == 1:
        top = tops.pop() + "/"
        if any(n.startswith(top + "train/") for n in names):
            return top
    raise DataError(f"{path}: no train/ folder found; {LAYOUT_HINT}")


def _decode_split(path: Path, classes: dict[str, list], class_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    items = [(name, _read(handle), class_names.index(cls)) for cls, entries in sorted(classes.items())
             for name, handle in entries]
    names = [i[0] for i in items]
    blobs = [i[1] for i in items]
    labels = np.array([i[2] for i in items], dtype=np.int64)
    chunks = [(names[i:i + 2048], blobs[i:i + 2048]) for i in range(0, len(blobs), 2048)]
    workers = _decode_workers(len(blobs))
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_decode_chunk, chunks))
    else:
        results = [_decode_chunk(c) for c in chunks]
    errors = [e for _, errs in results for e in errs]
    if errors:
        more = f" (and {len(errors) - 1} more bad file(s))" if len(errors) > 1 else ""
        raise DataError(f"{path}: {errors[0]}{more}; fix or remove the file(s)")
    return np.concatenate([r[0] for r in results]), labels


def _decode_workers(n: int) -> int:
    if n < 4000:
        return 1
    from job.resources import available_cpus
    return available_cpus()


def _decode_chunk(chunk: tuple[list[str], list[bytes]]) -> tuple[np.ndarray, list[str]]:
    from PIL import Image, UnidentifiedImageError

    names, blobs = chunk
    out = np.zeros((len(blobs), *IMAGE_SIZE, 3), dtype=np.uint8)
    errors = []
    for i, (name, blob) in enumerate(zip(names, blobs)):
        try:
            with Image.open(io.BytesIO(blob)) as im:
                im.load()
                if im.size != IMAGE_SIZE:
                    errors.append(f"{name} is {im.size[0]}x{im.size[1]}, expected 32x32")
                    continue
                out[i] = np.asarray(im.convert("RGB"))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            errors.append(f"{name} is not a readable image ({exc})")
    return out, errors

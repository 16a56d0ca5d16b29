"""The layout rules of a data source, from its entry names alone: one copy for the run (job.data.sources) and
the dry run (job.data.describe), so that `--dry-run` refuses exactly what the run refuses."""

from pathlib import Path, PurePosixPath

from job.errors import DataError
from job.gates.class_names import check_class_names

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png"}
LAYOUT_HINT = (
    "expected train/<class>/*.jpg|png (and optionally test/<class>/*), "
    "a cifar-10-python.tar.gz archive or cifar-10-batches-py/ folder, or 'keras'"
)


CIFAR_BATCHES = ("batches.meta", *(f"data_batch_{i}" for i in range(1, 6)))  # test_batch is optional


def is_cifar_python(names: list[str]) -> bool:
    return any(PurePosixPath(n).name == "data_batch_1" for n in names)


def check_cifar_python(path: Path, names: list[str]) -> None:
    present = {PurePosixPath(n).name for n in names if not n.endswith("/")}
    for name in CIFAR_BATCHES:
        if name not in present:
            raise DataError(f"{path}: missing {name}; not a complete cifar-10-batches-py set")


def image_tree(path: Path, names: list[str]) -> tuple[list[str], dict[str, dict[str, list[str]]]]:
    """(class names, {"train"|"test": {class: [entry names]}}) of an image-folder tree; DataError for anything the
    layout does not allow (nesting, a file beside the classes, an unsupported file, fewer than 2 classes, an empty
    class folder, a test class that train/ lacks, a class name the class-name gate refuses)."""
    prefix = _tree_prefix(path, names)
    splits: dict[str, dict[str, list[str]]] = {"train": {}, "test": {}}
    for name in names:
        if not name.startswith(prefix):
            continue
        parts = name[len(prefix) :].rstrip("/").split("/")
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
            raise DataError(
                f"{path}: {name} is a file directly in {split_name}/; images belong in {split_name}/<class>/"
            )
        if is_dir:
            raise DataError(f"{path}: unexpected sub-folder {name}; images belong directly in {split_name}/<class>/")
        file_name = parts[-1]
        if file_name.startswith("."):
            continue
        if len(parts) > 3:
            raise DataError(f"{path}: unexpected nesting at {name}; images belong directly in {split_name}/<class>/")
        if PurePosixPath(file_name).suffix.lower() not in IMAGE_EXTENSIONS:
            raise DataError(f"{path}: unsupported file {name} (expected .jpg, .jpeg or .png)")
        classes.setdefault(cls, []).append(name)
    class_names = sorted(splits["train"])
    _check_classes(path, class_names, splits)
    return class_names, splits


def _check_classes(path: Path, class_names: list[str], splits: dict[str, dict[str, list[str]]]) -> None:
    if len(class_names) < 2:
        raise DataError(
            f"{path}: found {len(class_names)} class folder(s) under train/; need at least 2. {LAYOUT_HINT}"
        )
    # the class-name gate, before anything is decoded: labels.txt lines, predict --json keys, log lines, the page
    check_class_names(class_names, f"{path}: train/ class folders")
    for split_name, classes in splits.items():
        for cls, items in classes.items():
            if not items:
                raise DataError(f"{path}: class folder {split_name}/{cls}/ is empty; add images or remove it")
    unknown = sorted(set(splits["test"]) - set(class_names))
    if unknown:
        raise DataError(f"{path}: test/ has class folder(s) {', '.join(unknown)} that train/ does not have")


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

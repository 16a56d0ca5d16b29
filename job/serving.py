"""`python -m job runs export-serving STORE RUN DEST`: a run as a model repository that serving systems load.

    DEST/triton/<name>/config.pbtxt            a Triton model repository (KServe's `onnx` format on its Triton
    DEST/triton/<name>/labels.txt                runtime): platform onnxruntime_onnx, the contract's input and
    DEST/triton/<name>/1/model.onnx              output, class names; every top-level folder a model Triton loads
    DEST/tensorflow/<name>/1/saved_model.pb    TensorFlow Serving's model base path (KServe's `tensorflow` format)
    DEST/tensorflow/<name>/1/variables/...

The two serving systems get separate roots: Triton loads every top-level folder of its repository and, by default
(--exit-on-error), refuses to start when one fails, so nothing but Triton models may sit there.

Everything in it is generated from the model contract (job/contract.py) and the model's own metadata,
never typed twice; every copied file is hash-verified against the run's manifest on the way (as `runs download`
does). DEST is a new or empty local folder (written beside it, renamed into place when complete) or s3://.
No TensorFlow is imported.
"""

import os
import re
import shutil
import tempfile
from pathlib import Path

from job.contract import CHANNELS, IMAGE_HEIGHT, IMAGE_WIDTH, INPUT_NAME, OUTPUT_NAME
from job.errors import ConfigError, DataError, StorageError
from job.gates.text import shown
from job.storage.layout import (
    LABELS,
    MODEL_ONNX,
    SAVED_MODEL_PB,
    SAVEDMODEL_DIRS,
    SAVEDMODEL_FILES,
    SAVEDMODEL_SUBFOLDERS,
    TRITON_CONFIG,
)

MAX_BATCH_SIZE = 64
SAVEDMODEL_PREFIXES = tuple(f"{d}/" if d != "." else "" for d in SAVEDMODEL_DIRS.values())  # in a run, by layout
TRITON_ROOT = "triton"  # DEST/<root>: what an InferenceService storageUri names
TF_SERVING_ROOT = "tensorflow"


def config_pbtxt(name: str, num_classes: int, max_batch_size: int = MAX_BATCH_SIZE) -> str:
    """Triton's ModelConfig (text format) for the contract: dims exclude the batch dimension."""
    return (
        f'name: "{name}"\n'
        'platform: "onnxruntime_onnx"\n'
        f"max_batch_size: {max_batch_size}\n"
        f'input [\n  {{\n    name: "{INPUT_NAME}"\n    data_type: TYPE_UINT8\n'
        f"    dims: [ {IMAGE_HEIGHT}, {IMAGE_WIDTH}, {CHANNELS} ]\n  }}\n]\n"
        f'output [\n  {{\n    name: "{OUTPUT_NAME}"\n    data_type: TYPE_FP32\n    dims: [ {num_classes} ]\n'
        f'    label_filename: "{LABELS}"\n  }}\n]\n'
        "dynamic_batching { }\n"
        "version_policy: { latest: { num_versions: 1 } }\n"
    )


def v2_request(images) -> dict:
    """An Open Inference Protocol (v2) request for uint8 images [N, 32, 32, 3], as KServe and Triton take it
    (POST /v2/models/<name>/infer)."""
    return {
        "inputs": [
            {"name": INPUT_NAME, "datatype": "UINT8", "shape": list(images.shape), "data": images.reshape(-1).tolist()}
        ],
        "outputs": [{"name": OUTPUT_NAME}],
    }


def _class_names(model: Path) -> list[str]:
    """The whole contract checked on the model itself (exit 8 names what breaks it)."""
    from job.contract import ContractError, check_session
    from job.errors import ModelError
    from job.runtime.ort import ort_session

    try:
        return check_session(ort_session(model, 1))
    except ContractError as exc:
        raise ModelError(f"{model.name} does not follow the model contract: {exc}") from None


MAX_NAME = 64
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def check_model_name(name: str) -> str:
    """A model's name in the repository: a folder name for Triton, TF Serving and KServe alike. ASCII letters,
    digits, '-' and '_', starting with a letter or digit, at most MAX_NAME characters (ConfigError otherwise)."""
    if not isinstance(name, str) or len(name) > MAX_NAME or not _MODEL_NAME.fullmatch(name):
        raise ConfigError(
            f"--name '{shown(name, 80)}': use 1 to {MAX_NAME} ASCII letters, digits, '-' and '_', "
            "starting with a letter or digit"
        )
    return name


def _inside(child: str, parent: str) -> bool:
    """`child` is `parent` or below it ('' is a whole bucket)."""
    return not parent or child == parent or child.startswith(parent.rstrip("/") + "/")


def _check_destination(store, dest: str):
    """DEST must be new or empty, and outside the store it exports from (a repository inside a store would be
    read as a broken run by `runs verify` / `runs list` from then on). Returns the S3 location of an s3:// DEST
    (None for a local one)."""
    from job.storage import open_location
    from job.storage.runs import check_new_folder

    store_root = store.location.root
    if not dest.startswith("s3://"):
        if store_root is not None and _inside(os.path.realpath(dest), os.path.realpath(store_root)):
            raise ConfigError(f"{dest} is inside the store {store.uri}; export into a folder outside it")
        check_new_folder(Path(dest), "export into a new folder")
        return None
    location = open_location(dest, what="serving destination")
    same_bucket = store_root is None and store.location.bucket == location.bucket
    if same_bucket and _inside(location.prefix, store.location.prefix):
        raise ConfigError(f"{dest} is inside the store {store.uri}; export to a prefix outside it")
    if not location.empty():
        raise DataError(f"{location.uri} holds objects already; export into a new, empty prefix")
    return location


def _staging(parent: Path, dest: str) -> Path:
    """A private folder beside DEST (renamed into place when complete) with the mode any new folder gets."""
    from job.storage.files import folder_mode

    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=parent, prefix=".export-serving-"))
        staging.chmod(folder_mode())
    except OSError as exc:
        raise StorageError(f"cannot create {dest} ({exc.strerror or exc}); choose a writable folder") from None
    return staging


def _upload(location, staging: Path) -> None:
    """Every file of the repository to S3, each read back and hashed; the config.pbtxt files last (a model folder
    without one is no model to Triton). On any failure every object written is removed (best effort), so a
    failed export leaves no partial repository."""
    files = sorted(
        (p for p in staging.rglob("*") if p.is_file()), key=lambda p: (p.name == TRITON_CONFIG, p.as_posix())
    )
    written = []
    try:
        for file in files:
            name = file.relative_to(staging).as_posix()
            written.append(location.key(name))
            location.check_arrived(name, location.put_file(name, file), file.stat().st_size)
    except BaseException as exc:
        location.delete_keys(written, quiet=True)
        if isinstance(exc, StorageError):
            raise StorageError(f"{exc}; the objects this export wrote were removed") from None
        raise


def export_serving(store_uri: str, run: str, dest: str, name: str = "cifar10", trust=None) -> dict:
    """`trust` (job.storage.signing.Trust): the run must be signed by it, checked before anything is written."""
    from job.storage import open_store
    from job.storage.signing import checked_manifest

    check_model_name(name)
    store = open_store(store_uri, None)
    run = store.resolve(run) if run else store.here_or_latest()
    manifest = checked_manifest(store, run, trust)  # read once: what is signed is what is copied
    files = manifest["files"]
    saved = next((prefix for prefix in SAVEDMODEL_PREFIXES if prefix + SAVED_MODEL_PB in files), None)
    local_dest = not dest.startswith("s3://")
    location = _check_destination(store, dest)
    staging = _staging(Path(dest).absolute().parent if local_dest else Path(tempfile.gettempdir()), dest)
    try:
        model_dir = staging / TRITON_ROOT / name
        onnx_dir = model_dir / "1"
        onnx_dir.mkdir(parents=True)
        store.fetch_verified(run, MODEL_ONNX, onnx_dir / MODEL_ONNX, manifest)
        classes = _class_names(onnx_dir / MODEL_ONNX)
        (model_dir / TRITON_CONFIG).write_text(config_pbtxt(name, len(classes)))
        (model_dir / LABELS).write_text("".join(f"{c}\n" for c in classes))
        copied = 1
        if saved is not None:
            for path in sorted(files):
                rest = path[len(saved) :] if path.startswith(saved) else ""
                if rest in SAVEDMODEL_FILES or rest.startswith(SAVEDMODEL_SUBFOLDERS):
                    target = staging / TF_SERVING_ROOT / name / "1" / rest
                    target.parent.mkdir(parents=True, exist_ok=True)
                    store.fetch_verified(run, path, target, manifest)
                    copied += 1
        if local_dest:
            if Path(dest).exists():
                Path(dest).rmdir()
            os.replace(staging, dest)
        else:
            _upload(location, staging)
    except OSError as exc:
        raise StorageError(f"cannot write the model repository to {dest} ({exc.strerror or exc})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {
        "event": "serving_exported",
        "run_id": run,
        "dest": dest,
        "model": name,
        "classes": len(classes),
        "files": copied,
        "tensorflow": saved is not None,
        # what each InferenceService's storageUri names, relative to dest
        "triton_repository": TRITON_ROOT,
        "tensorflow_model": f"{TF_SERVING_ROOT}/{name}" if saved is not None else None,
    }

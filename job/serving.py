"""`python -m job runs export-serving STORE RUN DEST`: a run as a model repository that serving systems load.

    DEST/<name>/config.pbtxt         NVIDIA Triton (and KServe's `onnx` format on its Triton runtime):
    DEST/<name>/labels.txt             platform onnxruntime_onnx, the contract's input and output, class names
    DEST/<name>/1/model.onnx
    DEST/<name>-tf/1/saved_model.pb  TensorFlow Serving's layout (KServe's `tensorflow` format)
    DEST/<name>-tf/1/variables/...

Everything in it is generated from the model contract (job/contract.py) and the model's own metadata,
never typed twice; every copied file is hash-verified against the run's manifest on the way (as `runs download`
does). DEST is a new or empty local folder (written beside it, renamed into place when complete) or s3://.
No TensorFlow is imported.
"""

import os
import shutil
import tempfile
from pathlib import Path

from job.contract import CHANNELS, IMAGE_HEIGHT, IMAGE_WIDTH, INPUT_NAME, OUTPUT_NAME
from job.errors import ConfigError, DataError, StorageError

MAX_BATCH_SIZE = 64
SAVEDMODEL_FOLDERS = ("saved_model", "1", "")  # the runs, SageMaker and Vertex layouts (job.storage.runs)


def config_pbtxt(name: str, num_classes: int, max_batch_size: int = MAX_BATCH_SIZE) -> str:
    """Triton's ModelConfig (text format) for the contract: dims exclude the batch dimension."""
    return (
        f'name: "{name}"\n'
        'platform: "onnxruntime_onnx"\n'
        f"max_batch_size: {max_batch_size}\n"
        f'input [\n  {{\n    name: "{INPUT_NAME}"\n    data_type: TYPE_UINT8\n'
        f"    dims: [ {IMAGE_HEIGHT}, {IMAGE_WIDTH}, {CHANNELS} ]\n  }}\n]\n"
        f'output [\n  {{\n    name: "{OUTPUT_NAME}"\n    data_type: TYPE_FP32\n    dims: [ {num_classes} ]\n'
        '    label_filename: "labels.txt"\n  }\n]\n'
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


def export_serving(store_uri: str, run: str, dest: str, name: str = "cifar10") -> dict:
    from job.storage import open_location, open_store

    if not name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"--name {name!r}: use letters, digits, '-' and '_'")
    store = open_store(store_uri, None)
    run = store.resolve(run) if run else store.here_or_latest()
    files = store.manifest(run)["files"]
    saved = next((f for f in SAVEDMODEL_FOLDERS if (f"{f}/saved_model.pb" if f else "saved_model.pb") in files), None)
    local_dest = not dest.startswith("s3://")
    if local_dest and Path(dest).exists() and (not Path(dest).is_dir() or any(Path(dest).iterdir())):
        raise DataError(f"{dest} exists and is not an empty folder; export into a new folder")
    parent = Path(dest).absolute().parent if local_dest else Path(tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=parent, prefix=".export-serving-"))
    try:
        onnx_dir = staging / name / "1"
        onnx_dir.mkdir(parents=True)
        store.fetch_verified(run, "model.onnx", onnx_dir / "model.onnx")
        classes = _class_names(onnx_dir / "model.onnx")
        (staging / name / "config.pbtxt").write_text(config_pbtxt(name, len(classes)))
        (staging / name / "labels.txt").write_text("".join(f"{c}\n" for c in classes))
        copied = 1
        if saved is not None:
            prefix = f"{saved}/" if saved else ""
            for path in sorted(files):
                rest = path[len(prefix) :] if path.startswith(prefix) else ""
                if rest in ("saved_model.pb", "fingerprint.pb") or rest.startswith(("variables/", "assets/")):
                    target = staging / f"{name}-tf" / "1" / rest
                    target.parent.mkdir(parents=True, exist_ok=True)
                    store.fetch_verified(run, path, target)
                    copied += 1
        if local_dest:
            if Path(dest).exists():
                Path(dest).rmdir()
            os.replace(staging, dest)
        else:
            location = open_location(dest)
            for file in sorted(p for p in staging.rglob("*") if p.is_file()):
                location.put_file(file.relative_to(staging).as_posix(), file)
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
    }

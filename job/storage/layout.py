"""A run folder's and a store's layout, written down once: every file name the job writes or reads there, the
one reader of metrics.json (`read_metrics`) and the one check of the numbers read from it (`json_number`).

    <run>/model.keras, model.onnx, model.int8.onnx, model.int8-vnni.onnx   the model, three ways
    <run>/<SAVEDMODEL_DIRS[layout]>/saved_model.pb, variables/, assets/   the SavedModel
    <run>/metrics.json, config.json, history.csv, *.png, MODEL_CARD.md    the report
    <run>/provenance.json, model.sig                                       what was built from what, and who signed it
    <run>/manifest.json                                                    every other file's sha256; written last
    <store>/latest.json                                                    the newest complete run
    <checkpoint dir>/state.json                                            the checkpoint's pointer to its model file
    <dest>/triton/<name>/config.pbtxt, labels.txt                          a serving repository (`job runs export-serving`)

tests/unit/test_run_layout.py fails where one of these names is spelled as a literal anywhere else in job/.
"""

import tempfile
from pathlib import Path

from job.errors import DataError
from job.gates.json_doc import load_json, read_json_file

# the model
MODEL_KERAS = "model.keras"
MODEL_ONNX = "model.onnx"
MODEL_INT8 = "model.int8.onnx"  # portable INT8 (--int8)
MODEL_INT8_VNNI = "model.int8-vnni.onnx"  # 8-bit weights, for CPUs with VNNI (--int8-vnni)

# Where each layout puts the SavedModel inside the run folder; the other files sit beside it.
SAVEDMODEL_DIRS = {"runs": "saved_model", "sagemaker": "1", "vertex": "."}
SAVED_MODEL_PB = "saved_model.pb"
SAVEDMODEL_FILES = (SAVED_MODEL_PB, "fingerprint.pb")  # a SavedModel's top-level files
SAVEDMODEL_SUBFOLDERS = ("variables/", "assets/")  # ... and its folders

# the report
METRICS = "metrics.json"
CONFIG = "config.json"
HISTORY = "history.csv"
CURVES = "curves.png"
CONFUSION_MATRIX = "confusion_matrix.png"
MISCLASSIFIED = "misclassified.png"
CLASSIFICATION_REPORT = "classification_report.txt"
MODEL_CARD = "MODEL_CARD.md"

# what was built from what, who signed it, and what the run holds
PROVENANCE = "provenance.json"
SIGNATURE = "model.sig"
MANIFEST = "manifest.json"

# a store, a checkpoint location, a serving repository
LATEST = "latest.json"
CHECKPOINT_STATE = "state.json"
TRITON_CONFIG = "config.pbtxt"
LABELS = "labels.txt"

MAX_METRICS_BYTES = 4 * 1024 * 1024  # a run's metrics.json is about 20 KB


def savedmodel_dir(layout: str) -> str:
    return SAVEDMODEL_DIRS[layout]


def json_number(value) -> int | float | None:
    """A JSON number as itself; anything else a record read from a store may hold (a string, a bool, null, a
    list) as None. The one check of the numbers in metrics.json and latest.json that readers show or compare."""
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def read_metrics(store, run: str = "", manifest: dict | None = None, what: str = "") -> dict | None:
    """The metrics.json of `run` in `store` (a job.storage.runs.RunStore; run "" for a run folder itself), parsed
    through the JSON gate (NaN allowed: a diverged run's loss is NaN), an object of at most MAX_METRICS_BYTES;
    None when there is none. With `manifest` (the copy the caller read, and checked the signature against), the
    file must be listed there, is refused from its listed size, and is hashed against it as it is copied: the
    bytes parsed are the bytes published. DataError naming `what` (default: where the file is) otherwise."""
    what = what or store.location.describe(f"{run}/{METRICS}" if run else METRICS)
    if manifest is None:
        raw = store.read(run, METRICS)
        return None if raw is None else load_json(raw, what, max_bytes=MAX_METRICS_BYTES, allow_nan=True, expect=dict)
    listed = manifest["files"].get(METRICS)
    if listed is not None and listed["bytes"] > MAX_METRICS_BYTES:  # refused from its size, never downloaded
        raise DataError(
            f"{what} is {listed['bytes']:,} bytes, over the {MAX_METRICS_BYTES:,}-byte limit for a metrics file"
        )
    with tempfile.TemporaryDirectory(prefix="metrics-") as tmp:
        path = store.fetch_verified(run, METRICS, Path(tmp) / METRICS, manifest)
        return read_json_file(path, what, max_bytes=MAX_METRICS_BYTES, allow_nan=True, expect=dict)

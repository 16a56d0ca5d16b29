"""The ONNX-only consumer: `python -m job predict MODEL IMAGES...`

Needs onnxruntime, numpy and pillow only (`pip install .`); never imports TensorFlow or Keras (an
import-linter contract in pyproject.toml enforces it). MODEL is a model.onnx, a run folder holding one, or a store
root (it follows latest.json), each also as s3:// (needs boto3: `.[s3]`). IMAGES are image files, folders
(searched recursively), .tar / .tar.gz archives and - (standard input: one image or a tar stream), read by
job.data.images and decoded by the image gate (job.gates.images): any size, resized to 32x32 when needed
(reported per image). A folder, archive or tar stream holding no images is a data error (3).

Exit codes (job.errors): 0 all inputs predicted; 2 usage; 3 some inputs unreadable (the others were still
predicted); 4 the model could not be downloaded; 8 the model is missing, not ONNX, or breaks the contract.
"""

import os
import sys
import tempfile
from pathlib import Path

from job.data.images import ImageRejected, decode, iter_inputs
from job.errors import EXIT_OK, DataError, ModelError
from job.gates.text import json_line, shown
from job.storage.layout import MODEL_INT8, MODEL_INT8_VNNI, MODEL_ONNX


def add_arguments(p) -> None:
    p.add_argument("model", help="model.onnx, a run folder or a store root (follows latest.json); local or s3://")
    p.add_argument("images", nargs="+", help="image files, folders, .tar/.tar.gz archives, - for standard input")
    p.add_argument("--top-k", type=int, default=3, help="classes to print per image (default 3)")
    p.add_argument(
        "--int8",
        action="store_true",
        help="use the run's INT8 model: model.int8-vnni.onnx where this CPU has VNNI, else model.int8.onnx",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per image on stdout")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = CPUs available)")
    from job.storage.signing import add_trust_arguments

    add_trust_arguments(p)


# ----------------------------------------------------------------------------- model


MODEL_HINT = "give a model.onnx, a run folder or a store root (it follows latest.json), local or s3://"


def model_files(int8: bool) -> list[str]:
    """The run's file to load, by preference: with --int8 the VNNI variant only where this CPU has VNNI."""
    if not int8:
        return [MODEL_ONNX]
    from job.runtime.resources import VNNI, cpu_has

    return ([MODEL_INT8_VNNI] if cpu_has(VNNI) else []) + [MODEL_INT8]


MAX_MODEL_BYTES = 512 * 1024 * 1024  # model.onnx is a few MB; a store that serves more is refused unread


def resolve_model(spec: str, download_dir: Path, int8: bool = False, trust=None) -> Path:
    """The model file to load. A bare model.onnx (local path or s3:// object) is used as given. A run folder
    (any layout) or a store root (through its latest.json, confined) goes through job.storage.runs: the file
    is copied into `download_dir`, hashed on the way, and returned only when it matches the run's manifest."""
    from job.errors import StorageError

    if spec.endswith(".onnx"):
        if trust is not None:  # a bare file has no manifest and no model.sig: nothing a signature could cover
            raise DataError(f"model {spec!r} is a bare .onnx file: a trusted key needs a signed run folder or store")
        return _bare_model(spec, download_dir)
    try:
        store = _open_store(spec)
        run = store.here_or_latest()
        if run is None:
            raise ModelError(f"model {spec!r} not found ({MODEL_HINT})")
        from job.storage.signing import checked_manifest

        manifest = checked_manifest(store, run, trust)  # read once; signature checked before anything is copied
        names = [n for n in model_files(int8) if n in manifest["files"]] or model_files(int8)[-1:]
        return store.fetch_verified(run, names[0], download_dir / names[0], manifest)
    except (FileNotFoundError, NotADirectoryError):
        raise ModelError(f"model {spec!r} not found ({MODEL_HINT})") from None
    except StorageError:
        raise
    except OSError as exc:
        raise ModelError(f"model {spec!r} cannot be read ({exc.strerror or exc})") from None


def _open_store(spec: str):
    if spec.startswith("s3://"):
        try:
            import boto3  # noqa: F401
        except ImportError:
            raise ModelError("s3:// models need boto3: pip install '.[s3]'") from None
    elif not Path(spec).is_dir():
        raise ModelError(f"model {spec!r} not found ({MODEL_HINT})")
    from job.storage import open_store

    return open_store(spec)


def _bare_model(spec: str, download_dir: Path) -> Path:
    """A model.onnx named directly: a regular local file (never a FIFO or device), or one S3 object, bounded."""
    from job.storage import open_location
    from job.storage.location import Missing

    folder, _, name = spec.rpartition("/")
    location = open_location(folder or ".", what="model location")
    dest = download_dir / MODEL_ONNX
    try:
        location.copy_out(name, dest, MAX_MODEL_BYTES)
    except Missing:
        raise ModelError(f"model {spec!r} not found ({MODEL_HINT})") from None
    except DataError as exc:
        raise ModelError(f"model {spec!r}: {exc}") from None
    except (FileNotFoundError, NotADirectoryError):
        raise ModelError(f"model {spec!r} not found ({MODEL_HINT})") from None
    return dest


def load_session(path: Path, threads: int = 0, spin: bool = True):
    from job.contract import ContractError, check_session
    from job.runtime.ort import ort_session

    try:
        session = ort_session(path, threads, spin)
    except Exception as exc:  # onnxruntime's own exception classes
        raise ModelError(f"{path} is not a loadable ONNX model ({str(exc).splitlines()[0][:200]})") from None
    requires = session.get_modelmeta().custom_metadata_map.get("requires_cpu_feature")
    if requires:
        from job.runtime.resources import cpu_has

        if not cpu_has(requires):
            raise ModelError(
                f"{path} needs a CPU with {requires.replace('|', ' or ')} (its 8-bit weights give wrong "
                "results without it); use model.int8.onnx or model.onnx on this CPU"
            )
    try:
        return session, check_session(session)
    except ContractError as exc:
        raise ModelError(f"{path} does not follow the model contract: {exc}") from None


# ----------------------------------------------------------------------------- main


def predict_batches(session, items, batch_size: int):
    import numpy as np

    from job.contract import INPUT_NAME, OUTPUT_NAME

    for i in range(0, len(items), batch_size):
        chunk = items[i : i + batch_size]
        try:
            probs = session.run([OUTPUT_NAME], {INPUT_NAME: np.stack([c[1] for c in chunk])})[0]
        except Exception as exc:  # onnxruntime's own exception classes: the model failed on valid input
            raise ModelError(f"ONNX Runtime failed running the model ({str(exc).splitlines()[0][:200]})") from None
        for (name, _, note), p in zip(chunk, probs, strict=True):
            yield name, note, p


def run(args) -> int:
    """Predict every image; ModelError/StorageError propagate to the CLI (exit 8/4), bad images give 3."""
    from job.errors import ConfigError

    if args.top_k < 1 or args.batch_size < 1:
        raise ConfigError("--top-k and --batch-size must be at least 1")
    if args.threads < 0:
        raise ConfigError(f"--threads {args.threads}: must be 0 (the CPUs available) or a positive number")
    from job.storage.signing import load_trust

    trust = load_trust(getattr(args, "public_key", ""), getattr(args, "trust_certificate", ""))
    with tempfile.TemporaryDirectory(prefix="predict-") as download_dir:  # removed on every path
        model = resolve_model(args.model, Path(download_dir), args.int8, trust)
        session, class_names = load_session(model, args.threads)

    good, bad = [], 0
    for name, blob, error in iter_inputs(args.images):
        if error is None:
            try:
                image, note = decode(blob, name)
                good.append((name, image, note))
                continue
            except ImageRejected as exc:  # the image gate (job.gates.images)
                error = exc.reason
        bad += 1
        print(f"error: {shown(f'data error: {name}: {error}', 2000)}", file=sys.stderr)  # names are hostile

    k = min(args.top_k, len(class_names))
    run_id = session.get_modelmeta().custom_metadata_map.get("run_id")
    try:
        _print_predictions(session, good, args, class_names, k, run_id)
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, the predictions were not wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return DataError.exit_code if bad else EXIT_OK


def _print_predictions(session, good, args, class_names, k, run_id) -> None:
    for name, note, probs in predict_batches(session, good, args.batch_size):
        order = probs.argsort()[::-1][:k]
        if args.json:
            print(
                json_line(
                    {
                        "input": name,
                        "run_id": run_id,
                        "top": [{"class": class_names[i], "probability": float(probs[i])} for i in order],
                        "probabilities": {c: float(x) for c, x in zip(class_names, probs, strict=True)},
                        "note": note,
                    }
                ),
                flush=True,
            )
        else:
            ranked = ", ".join(f"{class_names[i]} {probs[i]:.3f}" for i in order)
            print(shown(f"{name}: {ranked}" + (f"  [{note}]" if note else ""), 4000), flush=True)

"""The ONNX-only consumer: `python -m job predict MODEL IMAGES...`

Needs onnxruntime, numpy and pillow only (`pip install .`); never imports TensorFlow or Keras (an
import-linter contract in pyproject.toml enforces it). MODEL is a model.onnx, a run folder holding one,
or an s3:// URI of either (needs boto3: `.[s3]`). IMAGES are image files, folders (searched recursively)
and .tar / .tar.gz archives. Any size and mode is accepted: images are converted to RGB and, when not
32x32, resized with Pillow's antialiased bilinear filter (reported per image).

Exit codes (job.errors): 0 all inputs predicted; 2 usage; 3 some inputs unreadable (the others were still
predicted); 4 the model could not be downloaded; 8 the model is missing, not ONNX, or breaks the contract.
"""

import io
import json
import sys
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from job.data.entries import MAX_ENTRY_BYTES, read_file, safe_member_name
from job.errors import EXIT_OK, DataError, ModelError, StorageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}
RESIZE_FILTER = "bilinear"
# A photo of 6000 x 4000 has 24 MP; anything beyond 50 MP is refused from its header, before decoding
# (a 109 KB PNG can declare 30000 x 30000 pixels and decode to 2.7 GB).
MAX_PIXELS = 50_000_000


def add_arguments(p) -> None:
    p.add_argument("model", help="model.onnx, a run folder, or s3://bucket/prefix/run-id[/model.onnx]")
    p.add_argument("images", nargs="+", help="image files, folders, .tar/.tar.gz archives")
    p.add_argument("--top-k", type=int, default=3, help="classes to print per image (default 3)")
    p.add_argument("--json", action="store_true", help="one JSON object per image on stdout")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = CPUs available)")


# ----------------------------------------------------------------------------- model


def resolve_model(spec: str, download_dir: Path) -> Path:
    if spec.startswith("s3://"):
        return _download_model(spec, download_dir)
    path = Path(spec)
    if path.is_dir():
        path = path / "model.onnx"
    if not path.is_file():
        raise ModelError(f"model {spec!r} not found (give a model.onnx, a run folder or an s3:// URI)")
    return path


def _download_model(uri: str, download_dir: Path) -> Path:
    try:
        from job.storage.s3client import explain, make_client, parse_uri, s3_errors
    except ImportError:
        raise ModelError("s3:// models need boto3: pip install '.[s3]'") from None
    bucket, key = parse_uri(uri)
    client = make_client()
    if not key.endswith(".onnx"):
        key = f"{key}/model.onnx" if key else "model.onnx"
    dest = download_dir / "model.onnx"
    try:
        client.download_file(bucket, key, str(dest))
    except s3_errors() as exc:
        raise StorageError(explain(exc, client, bucket, f"download {key} from")) from None
    return dest


def load_session(path: Path, threads: int = 0):
    from job.export.contract import ContractError, check_session
    from job.runtime.ort import ort_session

    try:
        session = ort_session(path, threads)
    except Exception as exc:  # onnxruntime's own exception classes
        raise ModelError(f"{path} is not a loadable ONNX model ({str(exc).splitlines()[0][:200]})") from None
    try:
        return session, check_session(session)
    except ContractError as exc:
        raise ModelError(f"{path} does not follow the model contract: {exc}") from None


# ----------------------------------------------------------------------------- inputs


def iter_inputs(specs: list[str]):
    """Yield (name, bytes or None, error or None) for every image named by the specs."""
    for spec in specs:
        path = Path(spec)
        try:
            if path.is_dir():
                files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir())
                if not files:
                    yield spec, None, "folder holds no images"
                for f in files:
                    yield from _read_one(f)
            elif path.name.endswith((".tar", ".tar.gz", ".tgz")) and path.is_file():
                yield from _iter_tar(path)
            elif path.exists():
                yield from _read_one(path)
            else:
                yield spec, None, "no such file or folder"
        except OSError as exc:
            yield spec, None, f"cannot read ({exc.strerror or exc})"


def _read_one(path: Path):
    try:
        yield str(path), read_file(path), None
    except DataError as exc:
        yield str(path), None, str(exc)


def _iter_tar(path: Path):
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                label = f"{path}:{member.name}"
                try:
                    safe_member_name(path, member, MAX_ENTRY_BYTES)
                except DataError as exc:
                    yield label, None, f"skipped: {exc}"
                    continue
                if member.isfile() and PurePosixPath(member.name).suffix.lower() in IMAGE_SUFFIXES:
                    yield label, tar.extractfile(member).read(), None
    except (tarfile.TarError, OSError, EOFError) as exc:
        yield str(path), None, f"unreadable archive ({exc})"


def decode(blob: bytes):
    """-> (uint8 [32, 32, 3], note). Raises ValueError for anything that is not a readable image."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(blob)) as im:
            size = im.size
            if size[0] * size[1] > MAX_PIXELS:
                raise ValueError(f"{size[0]}x{size[1]} pixels is over the {MAX_PIXELS:,}-pixel limit")
            im.load()
            rgb = im.convert("RGB")
    except UnidentifiedImageError:
        raise ValueError("not an image (unrecognised format)") from None
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"unreadable or truncated image ({exc})") from None
    note = None
    if size != (32, 32):
        rgb = rgb.resize((32, 32), Image.Resampling.BILINEAR)
        note = f"resized from {size[0]}x{size[1]} to 32x32 ({RESIZE_FILTER})"
    return np.asarray(rgb, dtype=np.uint8), note


# ----------------------------------------------------------------------------- main


def predict_batches(session, items, batch_size: int):
    import numpy as np

    from job.export.contract import INPUT_NAME, OUTPUT_NAME

    for i in range(0, len(items), batch_size):
        chunk = items[i : i + batch_size]
        probs = session.run([OUTPUT_NAME], {INPUT_NAME: np.stack([c[1] for c in chunk])})[0]
        for (name, _, note), p in zip(chunk, probs, strict=True):
            yield name, note, p


def run(args) -> int:
    """Predict every image; ModelError/StorageError propagate to the CLI (exit 8/4), bad images give 3."""
    from job.errors import ConfigError

    if args.top_k < 1 or args.batch_size < 1:
        raise ConfigError("--top-k and --batch-size must be at least 1")
    with tempfile.TemporaryDirectory(prefix="predict-") as download_dir:  # removed on every path
        session, class_names = load_session(resolve_model(args.model, Path(download_dir)), args.threads)

    good, bad = [], 0
    for name, blob, error in iter_inputs(args.images):
        if error is None:
            try:
                image, note = decode(blob)
                good.append((name, image, note))
                continue
            except ValueError as exc:
                error = str(exc)
        bad += 1
        print(f"error: data error: {name}: {error}", file=sys.stderr)

    k = min(args.top_k, len(class_names))
    for name, note, probs in predict_batches(session, good, args.batch_size):
        order = probs.argsort()[::-1][:k]
        if args.json:
            print(
                json.dumps(
                    {
                        "input": name,
                        "top": [{"class": class_names[i], "probability": float(probs[i])} for i in order],
                        "probabilities": [float(x) for x in probs],
                        "note": note,
                    }
                )
            )
        else:
            ranked = ", ".join(f"{class_names[i]} {probs[i]:.3f}" for i in order)
            print(f"{name}: {ranked}" + (f"  [{note}]" if note else ""))
    sys.stdout.flush()
    return DataError.exit_code if bad else EXIT_OK

"""ONNX-only predictor: `python -m export.predict MODEL IMAGES...`

Needs onnxruntime, numpy and pillow only (`pip install .[predict]`); never imports TensorFlow or Keras.
MODEL is a model.onnx, a run folder holding one, or an s3:// URI of either (needs boto3: `.[s3]`).
IMAGES are image files, folders (searched recursively) and .tar / .tar.gz archives. Any size and mode
is accepted: images are converted to RGB and, when not 32x32, resized with Pillow's antialiased
bilinear filter (reported per image).

exit codes: 0 all inputs predicted; 2 usage; 3 some inputs unreadable (the others were still predicted);
4 the model is missing, not ONNX, or does not follow the model contract.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
from pathlib import Path, PurePosixPath

EXIT_OK, EXIT_USAGE, EXIT_BAD_INPUT, EXIT_BAD_MODEL = 0, 2, 3, 4
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}
RESIZE_FILTER = "bilinear"


class ModelError(Exception):
    pass


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m export.predict", description=__doc__.split("\n\n")[1],
                                epilog="exit codes: 0 ok; 2 usage; 3 some inputs unreadable; 4 bad model",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="model.onnx, a run folder, or s3://bucket/prefix/run-id[/model.onnx]")
    p.add_argument("images", nargs="+", help="image files, folders, .tar/.tar.gz archives")
    p.add_argument("--top-k", type=int, default=3, help="classes to print per image (default 3)")
    p.add_argument("--json", action="store_true", help="one JSON object per image on stdout")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = CPUs available)")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- model

def resolve_model(spec: str, cache_dir: Path | None = None) -> Path:
    if spec.startswith("s3://"):
        return _download_model(spec, cache_dir)
    path = Path(spec)
    if path.is_dir():
        path = path / "model.onnx"
    if not path.is_file():
        raise ModelError(f"model {spec!r} not found (give a model.onnx, a run folder or an s3:// URI)")
    return path


def _download_model(uri: str, cache_dir: Path | None) -> Path:
    try:
        from job.s3 import make_client, parse_uri
        bucket, key = parse_uri(uri)
        client = make_client()
    except ImportError:
        raise ModelError("s3:// models need boto3: pip install '.[s3]'") from None
    if not key.endswith(".onnx"):
        key = f"{key}/model.onnx" if key else "model.onnx"
    import tempfile
    dest = Path(cache_dir or tempfile.mkdtemp(prefix="predict-")) / Path(key).name
    try:
        client.download_file(bucket, key, str(dest))
    except Exception as exc:  # botocore errors, missing key, unreachable endpoint
        raise ModelError(f"cannot download s3://{bucket}/{key} ({type(exc).__name__}: {exc})") from None
    return dest


def load_session(path: Path, threads: int = 0):
    import onnxruntime as ort

    from export.contract import ContractError, check_session
    from job.resources import available_cpus

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or available_cpus()
    options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:
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
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                yield spec, None, "folder holds no images"
            for f in files:
                yield str(f), f.read_bytes(), None
        elif path.is_file() and (path.name.endswith((".tar", ".tar.gz", ".tgz"))):
            yield from _iter_tar(path)
        elif path.is_file():
            yield spec, path.read_bytes(), None
        else:
            yield spec, None, "no such file or folder"


def _iter_tar(path: Path):
    from job.data import safe_member_name
    from job.errors import DataError

    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                label = f"{path}:{member.name}"
                try:
                    safe_member_name(path, member)
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
            im.load()
            size = im.size
            rgb = im.convert("RGB")
    except UnidentifiedImageError:
        raise ValueError("not an image (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"unreadable or truncated image ({exc})") from None
    note = None
    if size != (32, 32):
        rgb = rgb.resize((32, 32), Image.Resampling.BILINEAR)
        note = f"resized from {size[0]}x{size[1]} to 32x32 ({RESIZE_FILTER})"
    return np.asarray(rgb, dtype=np.uint8), note


# ----------------------------------------------------------------------------- main

def predict_batches(session, items, batch_size: int):
    import numpy as np

    from export.contract import INPUT_NAME, OUTPUT_NAME

    for i in range(0, len(items), batch_size):
        chunk = items[i:i + batch_size]
        probs = session.run([OUTPUT_NAME], {INPUT_NAME: np.stack([c[1] for c in chunk])})[0]
        for (name, _, note), p in zip(chunk, probs):
            yield name, note, p


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.top_k < 1 or args.batch_size < 1:
        print("error: --top-k and --batch-size must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    try:
        session, class_names = load_session(resolve_model(args.model), args.threads)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_MODEL

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
        print(f"error: {name}: {error}", file=sys.stderr)

    k = min(args.top_k, len(class_names))
    for name, note, probs in predict_batches(session, good, args.batch_size):
        order = probs.argsort()[::-1][:k]
        if args.json:
            print(json.dumps({"input": name, "top": [{"class": class_names[i], "probability": float(probs[i])}
                                                     for i in order],
                              "probabilities": [float(x) for x in probs], "note": note}))
        else:
            ranked = ", ".join(f"{class_names[i]} {probs[i]:.3f}" for i in order)
            print(f"{name}: {ranked}" + (f"  [{note}]" if note else ""))
    sys.stdout.flush()
    return EXIT_BAD_INPUT if bad else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

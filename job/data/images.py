"""The images given to `job predict`: files, folders (searched recursively), .tar / .tar.gz archives and standard
input (one image or a tar stream), each read with a size bound; and their decoding to the model's 32x32 RGB
uint8 input. Any size and mode is accepted: converted to RGB and, when not 32x32, resized with Pillow's
antialiased bilinear filter (reported per image). Nothing here imports TensorFlow."""

import io
import sys
import tarfile
from pathlib import Path, PurePosixPath

from job.data.entries import MAX_ENTRY_BYTES, read_file, safe_member_name
from job.errors import DataError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}
RESIZE_FILTER = "bilinear"
# A photo of 6000 x 4000 has 24 MP; anything beyond 50 MP is refused from its header, before decoding
# (a 109 KB PNG can declare 30000 x 30000 pixels and decode to 2.7 GB).
MAX_PIXELS = 50_000_000


def iter_inputs(specs: list[str]):
    """Yield (name, bytes or None, error or None) for every image named by the specs; `-` is standard input (one
    image, or a tar stream of images)."""
    for spec in specs:
        path = Path(spec)
        try:
            if spec == "-":
                yield from _read_stdin()
            elif path.is_dir():
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


def _read_stdin():
    data = sys.stdin.buffer.read(MAX_ENTRY_BYTES + 1)
    if len(data) > MAX_ENTRY_BYTES:
        yield "-", None, f"standard input is over the {MAX_ENTRY_BYTES:,}-byte limit"
        return
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            members = [
                (m, tar.extractfile(m).read())
                for m in tar
                if m.isfile() and m.size <= MAX_ENTRY_BYTES and PurePosixPath(m.name).suffix.lower() in IMAGE_SUFFIXES
            ]
        for member, blob in members:
            yield f"-:{member.name}", blob, None
    except (tarfile.TarError, EOFError, OSError):  # not a tar: one image
        yield "-", data, None


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

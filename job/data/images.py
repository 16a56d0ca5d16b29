"""The images given to `job predict`: files, folders (searched recursively), .tar / .tar.gz archives and standard
input (one image or a tar stream), each read with a size bound; and their decoding to the model's 32x32 RGB
uint8 input through the image gate (job.gates.images: the format from the bytes, the allowlist, the pixel bound,
the one preprocessing rule). Any size is accepted: when not 32x32, resized with Pillow's antialiased bilinear
filter (reported per image). Nothing here imports TensorFlow."""

import io
import sys
from pathlib import Path, PurePosixPath

from job.data.entries import MAX_ENTRY_BYTES, UNREADABLE, Archive, is_tar, read_file, safe_member_name
from job.errors import DataError
from job.gates.images import MAX_PIXELS, RESIZE_FILTER, ImageRejected, model_input  # noqa: F401 (re-exported)

# Which files of a folder or tar are taken as inputs. The name only selects: the format is read from the bytes.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}


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
        except DataError as exc:  # an archive past the archive limits (job.data.entries.Archive)
            yield spec, None, str(exc)


def _read_stdin():
    data = sys.stdin.buffer.read(MAX_ENTRY_BYTES + 1)
    if len(data) > MAX_ENTRY_BYTES:
        yield "-", None, f"standard input is over the {MAX_ENTRY_BYTES:,}-byte limit"
        return
    stream = io.BytesIO(data)
    if not is_tar(stream):
        yield "-", data, None  # not a tar: one image
        return
    found = 0
    try:
        with Archive(stream, "standard input (a tar stream)") as archive:
            for member in archive.members():
                if member.isfile() and _wanted(member) and member.size <= MAX_ENTRY_BYTES and not member.issparse():
                    found += 1
                    yield f"-:{member.name}", archive.read(member), None  # one member at a time, never all
    except UNREADABLE as exc:
        yield "-", None, f"unreadable tar stream ({exc or type(exc).__name__})"
        return
    if not found:
        yield "-", None, "the tar stream holds no images (" + ", ".join(sorted(IMAGE_SUFFIXES)) + ")"


def _wanted(member) -> bool:
    return PurePosixPath(member.name).suffix.lower() in IMAGE_SUFFIXES


def _read_one(path: Path):
    try:
        yield str(path), read_file(path), None
    except DataError as exc:
        yield str(path), None, str(exc)


def _iter_tar(path: Path):
    found = 0
    try:
        with Archive(path) as archive:
            for member in archive.members():
                label = f"{path}:{member.name}"
                try:
                    safe_member_name(path, member, MAX_ENTRY_BYTES)
                except DataError as exc:
                    found += 1
                    yield label, None, f"skipped: {exc}"
                    continue
                if member.isfile() and _wanted(member):
                    found += 1
                    yield label, archive.read(member), None
    except UNREADABLE as exc:
        yield str(path), None, f"unreadable archive ({exc})"
        return
    if not found:
        yield str(path), None, "archive holds no images"


def decode(blob: bytes, name: str = "image"):
    """-> (uint8 [32, 32, 3], note), through the image gate. Raises ImageRejected (a DataError) for anything that
    is not a readable image in an accepted format."""
    return model_input(blob, name)

"""Property tests of the image gate (job.gates.images): whatever the bytes (random, real images truncated or with
bytes flipped, polyglots of an allowlisted header and a refused body or the other way round), the gate returns an
image made by the one rule or raises its one documented error, `ImageRejected` (a DataError: exit 3), within a
bounded time, and never reaches Ghostscript. No TensorFlow (the unit tier's blocker applies here too)."""

import io
import os

import numpy as np
import pytest
from hostile_images import HOSTILE, HOSTILE_PREDICT_ONLY, POSTSCRIPT, ghostscript_spy, png_16bit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from unit.conftest import _no_tensorflow  # noqa: F401 (the unit tier's TensorFlow blocker, autouse)

from job.gates.images import FORMATS, MAX_PIXELS, ImageRejected, model_input, refused_kind, sniff

# Each example must finish within this (a header that declares a huge image is refused before decoding).
DEADLINE_MS = 1500
FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")),
    deadline=DEADLINE_MS,
    database=None,  # nothing written into the checkout
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def _real(fmt: str, mode: str = "RGB", size=(32, 32)) -> bytes:
    rng = np.random.default_rng(len(fmt) + len(mode))
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


REAL = {
    "png": _real("PNG"),
    "png-rgba": _real("PNG", "RGBA"),
    "png-palette": _real("PNG", "P"),
    "png-16bit": png_16bit(),
    "jpeg": _real("JPEG"),
    "jpeg-grey-big": _real("JPEG", "L", (80, 60)),
    "gif": _real("GIF", "P"),
    "bmp": _real("BMP"),
    "webp": _real("WEBP"),
    "tiff": _real("TIFF"),
    "ppm": _real("PPM"),
}
REFUSED_BODIES = [POSTSCRIPT, b"%PDF-1.7\n", b"\xc5\xd0\xd3\xc6" + POSTSCRIPT, b"<svg/>", b"\x00\x00\x01\x00"]


@pytest.fixture(scope="module", autouse=True)
def ghostscript_watch(tmp_path_factory):
    """A `gs` first on PATH that leaves a marker if anything runs it; checked after every test."""
    folder, marker = ghostscript_spy(tmp_path_factory.mktemp("gs-spy"))
    old = os.environ["PATH"]
    os.environ["PATH"] = f"{folder}:{old}"
    yield marker
    os.environ["PATH"] = old
    assert not marker.exists(), "Ghostscript ran"


def _gate(blob: bytes) -> None:
    """The property: a (32, 32, 3) uint8 image, or ImageRejected naming the input; nothing else."""
    try:
        pixels, _ = model_input(blob, "fuzz.jpg")
    except ImageRejected as exc:
        assert str(exc).startswith("fuzz.jpg: ") and "\n" not in str(exc) and exc.exit_code == 3
        return
    assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8
    assert sniff(blob[:32]) in FORMATS


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes(blob):
    _gate(blob)


@FUZZ
@given(st.sampled_from(sorted(REAL)), st.integers(min_value=0, max_value=4096))
def test_truncated_real_images(kind, cut):
    blob = REAL[kind]
    _gate(blob[: min(cut, len(blob))])


@FUZZ
@given(st.sampled_from(sorted(REAL)), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8))
def test_real_images_with_bytes_changed(kind, changes):
    blob = bytearray(REAL[kind])
    for at, value in changes:
        blob[at % len(blob)] = value
    _gate(bytes(blob))


@FUZZ
@given(
    st.sampled_from(sorted(REAL)),
    st.sampled_from(REFUSED_BODIES),
    st.integers(min_value=0, max_value=64),
    st.booleans(),
)
def test_polyglots(kind, refused, head_bytes, refused_first):
    """An allowlisted header glued to a refused format, or a refused header before a real image."""
    real = REAL[kind]
    blob = refused + real if refused_first else real[: max(head_bytes, 3)] + refused
    if refused_first:  # whatever follows, a refused header is refused unopened
        with pytest.raises(ImageRejected, match="refused unopened"):
            model_input(blob, "fuzz.jpg")
    else:
        _gate(blob)


@FUZZ
@given(st.binary(min_size=0, max_size=64))
def test_sniff_reads_only_the_allowlist(head):
    fmt = sniff(head)
    assert fmt is None or fmt in FORMATS
    if fmt is not None:
        assert refused_kind(head) is None  # no header is both accepted and refused


@FUZZ
@given(st.sampled_from(sorted(HOSTILE | HOSTILE_PREDICT_ONLY)), st.binary(max_size=256))
def test_hostile_files_stay_refused_whatever_follows(name, tail):
    blob = (HOSTILE | HOSTILE_PREDICT_ONLY)[name]()
    if name.startswith(("truncated", "header-only", "png-then", "jpeg-magic")):
        _gate(blob + tail)  # a tail can complete a truncated file: then it must decode by the rule
    else:
        with pytest.raises(ImageRejected):
            model_input(blob + tail, "fuzz.jpg")


def test_the_bound_is_below_pillows():
    assert MAX_PIXELS < Image.MAX_IMAGE_PIXELS

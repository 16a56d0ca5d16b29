"""The image gate (job.gates.images): formats from the bytes against the allowlist, nothing else opened (Ghostscript
never runs), pixels bounded from the header, and the one preprocessing rule (EXIF orientation, 16-bit, palette
transparency, alpha over white) identical in the predictor and the training decoder."""

import io
import os
import subprocess
import sys

import numpy as np
import pytest
from hostile_images import HOSTILE, HOSTILE_PREDICT_ONLY, POSTSCRIPT, encoded, ghostscript_spy
from PIL import Image

from helpers import ROOT, job_env, needs
from job.data.decode import TRAINING_FORMATS, _decode_chunk
from job.data.images import decode
from job.errors import DataError
from job.gates.images import BACKGROUND, FORMATS, ImageRejected, load_rgb, model_input, sniff, to_rgb

RNG = np.random.default_rng(3)
GREY8 = RNG.integers(0, 256, (32, 32), dtype=np.uint8)
LOW = RNG.integers(0, 256, (32, 32), dtype=np.uint16)
GREY16 = (GREY8.astype(np.uint16) << 8) | LOW  # the same image with 8 more bits: its high byte is GREY8


def _save(image: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


SIXTEEN_BIT = {
    "I;16 PNG": lambda: _save(Image.fromarray(GREY16), "PNG"),
    "I;16 TIFF": lambda: _save(Image.fromarray(GREY16), "TIFF"),
    "I;16B TIFF": lambda: _save(Image.frombytes("I;16B", (32, 32), GREY16.astype(">u2").tobytes()), "TIFF"),
    "I PPM (16-bit P5)": lambda: _save(Image.fromarray(GREY16), "PPM"),
    "I TIFF (32-bit)": lambda: _save(Image.fromarray(GREY16.astype(np.int32)), "TIFF"),
}


@pytest.mark.parametrize("kind", SIXTEEN_BIT)
def test_a_16_bit_grey_image_gives_the_pixels_of_its_8_bit_twin(kind):
    blob = SIXTEEN_BIT[kind]()
    assert Image.open(io.BytesIO(blob)).mode.startswith("I")  # really decoded as a 16/32-bit mode
    twin = np.repeat(GREY8[..., None], 3, axis=2)
    got, note = decode(blob, kind)
    assert note is None and np.array_equal(got, twin)  # was all white (255) before the gate
    assert np.array_equal(decode(_save(Image.fromarray(GREY8), "PNG"))[0], twin)


def test_the_training_decoder_applies_the_same_rule():
    png16 = SIXTEEN_BIT["I;16 PNG"]()
    rgba = RNG.integers(0, 256, (32, 32, 4), dtype=np.uint8)
    blobs = [png16, _save(Image.fromarray(GREY8), "PNG"), encoded(rgba, "PNG", "RGBA")]
    out, errors = _decode_chunk((["a.png", "b.png", "c.png"], blobs))
    assert errors == [] and np.array_equal(out[0], out[1])
    assert np.array_equal(out[2], decode(blobs[2])[0]) and np.array_equal(out[2], _over_white(rgba))


def _over_white(rgba: np.ndarray) -> np.ndarray:
    c, a = rgba[..., :3].astype(np.int64), rgba[..., 3:4].astype(np.int64)
    bg = np.array(BACKGROUND)
    return ((c * a + 127) // 255 + (bg * (255 - a) + 127) // 255).astype(np.uint8)


def test_alpha_is_composited_over_white_in_every_mode():
    rgba = RNG.integers(0, 256, (32, 32, 4), dtype=np.uint8)
    rgba[0, :, 3] = 0  # fully transparent pixels keep arbitrary colour values: they must come out white
    assert np.array_equal(decode(encoded(rgba, "PNG", "RGBA"))[0], _over_white(rgba))
    assert (decode(encoded(rgba, "PNG", "RGBA"))[0][0] == 255).all()
    la = np.stack([GREY8, RNG.integers(0, 256, (32, 32), dtype=np.uint8)], axis=2)
    expected = _over_white(np.concatenate([np.repeat(la[..., :1], 3, axis=2), la[..., 1:]], axis=2))
    assert np.array_equal(decode(encoded(la, "PNG", "LA"))[0], expected)
    palette = Image.fromarray(RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)).quantize(16)
    blob = _save(palette, "PNG", transparency=3)  # palette entry 3 is transparent (tRNS)
    indices = np.asarray(Image.open(io.BytesIO(blob)))
    got = decode(blob)[0]
    assert (got[indices == 3] == 255).all() and (indices == 3).any()
    opaque = np.asarray(Image.open(io.BytesIO(blob)).convert("RGB"))[indices != 3]
    assert np.array_equal(got[indices != 3], opaque)
    pa = palette.convert("PA")
    assert pa.mode == "PA" and np.array_equal(np.asarray(to_rgb(pa)), np.asarray(palette.convert("RGB")))


# EXIF orientation -> the numpy view that shows the stored pixels upright (browsers' `image-orientation: from-image`)
ORIENTATIONS = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_the_exif_orientation_is_applied(orientation):
    stored = RNG.integers(0, 256, (24, 32, 3), dtype=np.uint8)  # not square: the rotation changes the size
    exif = Image.Exif()
    exif[0x0112] = orientation
    blob = _save(Image.fromarray(stored), "PNG", exif=exif.tobytes())
    upright = np.asarray(load_rgb(blob))
    assert np.array_equal(upright, ORIENTATIONS[orientation](stored))


@pytest.mark.parametrize("name", [*HOSTILE, *HOSTILE_PREDICT_ONLY])
def test_every_hostile_file_is_refused_with_a_data_error_naming_it(name):
    blob = (HOSTILE | HOSTILE_PREDICT_ONLY)[name]()
    with pytest.raises(ImageRejected) as refused:
        model_input(blob, name)
    assert isinstance(refused.value, DataError) and refused.value.exit_code == 3
    assert str(refused.value).startswith(f"{name}: ") and "\n" not in str(refused.value)


def test_the_training_allowlist_is_narrower():
    gif = encoded(RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8), "GIF")
    assert sniff(gif) == "GIF" and "GIF" in FORMATS and "GIF" not in TRAINING_FORMATS
    assert model_input(gif, "x.gif")[0].shape == (32, 32, 3)
    with pytest.raises(ImageRejected, match="GIF, refused unopened; accepted: PNG, JPEG"):
        model_input(gif, "x.png", formats=TRAINING_FORMATS)
    _, errors = _decode_chunk((["train/bird/x.png"], [gif]))
    assert errors == [
        "train/bird/x.png: not an image in an accepted format (GIF, refused unopened; accepted: PNG, JPEG)"
    ]


def test_training_refuses_another_size_from_the_header():
    blob = encoded(RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    with pytest.raises(ImageRejected, match="64x48 pixels, expected 32x32"):
        model_input(blob, "x.png", resize=False)


# Ghostscript: a `gs` first on PATH that leaves a marker when it runs (then runs the real one).
PROBE = """
import io, sys
from PIL import Image
blob = open(sys.argv[2], "rb").read()
if sys.argv[1] == "pillow":
    Image.open(io.BytesIO(blob)).load()  # what the predictor and the training decoder did before the gate
else:
    from job.gates.images import ImageRejected, model_input
    try:
        model_input(blob, "photo.jpg")
    except ImageRejected as exc:
        print(exc)
"""


@pytest.mark.parametrize("name", ["postscript.jpg", "eps-binary-header.png", "document.jpg"])
def test_ghostscript_is_never_run(name, tmp_path):
    if not os.path.exists("/usr/bin/gs"):
        needs(False, "Ghostscript", "apt-get install ghostscript")
    folder, marker = ghostscript_spy(tmp_path / "spy")
    path = tmp_path / name
    path.write_bytes((HOSTILE)[name]())
    env = job_env(PATH=f"{folder}:{os.environ['PATH']}")
    gated = subprocess.run([sys.executable, "-c", PROBE, "gate", str(path)], env=env, cwd=ROOT, capture_output=True)
    assert gated.returncode == 0 and b"refused unopened" in gated.stdout, gated.stderr
    assert not marker.exists()
    if name != "document.jpg":  # Pillow opens PDF for writing only; PostScript and EPS it hands to Ghostscript
        subprocess.run([sys.executable, "-c", PROBE, "pillow", str(path)], env=env, cwd=ROOT, capture_output=True)
        assert marker.exists(), "the probe did not reach Ghostscript: the test would prove nothing"


def test_postscript_is_the_payload_it_claims():
    assert POSTSCRIPT.startswith(b"%!PS") and sniff(POSTSCRIPT) is None


def test_the_banded_steps_give_the_values_of_the_whole_image(monkeypatch):
    import job.gates.images as gate

    rgba = RNG.integers(0, 256, (37, 29, 4), dtype=np.uint8)
    la = np.stack([GREY8, RNG.integers(0, 256, (32, 32), dtype=np.uint8)], axis=2)
    whole = [decode(encoded(rgba, "PNG", "RGBA"))[0], decode(encoded(la, "PNG", "LA"))[0]]
    whole.append(decode(SIXTEEN_BIT["I TIFF (32-bit)"]())[0])
    monkeypatch.setattr(gate, "BAND_PIXELS", 50)  # bands of one or two rows, a row split never
    banded = [decode(encoded(rgba, "PNG", "RGBA"))[0], decode(encoded(la, "PNG", "LA"))[0]]
    banded.append(decode(SIXTEEN_BIT["I TIFF (32-bit)"]())[0])
    assert all(np.array_equal(w, b) for w, b in zip(whole, banded, strict=True))
    assert np.array_equal(load_rgb(encoded(rgba, "PNG", "RGBA")), _over_white(rgba))


BOMB = """
import io, resource, sys
from PIL import Image
from job.gates.images import SERVE_MAX_PIXELS, ImageRejected, model_input
buffer = io.BytesIO()
Image.new(sys.argv[1], (7000, 7000), 0).save(buffer, "PNG", **({"transparency": 0} if sys.argv[1] == "1" else {}))
blob = buffer.getvalue()
try:
    model_input(blob, "bomb.png", max_pixels=SERVE_MAX_PIXELS)
except ImageRejected as exc:
    print(exc.reason)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
assert model_input(blob, "bomb.png")[0].shape == (32, 32, 3)
print(len(blob), (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


@pytest.mark.parametrize("mode", ["1", "LA"])
def test_a_49_mp_bomb_is_refused_by_the_server_bound_and_decoded_in_bounded_memory(mode):
    """The security review's 6 KB PNG (7000 x 7000, 1-bit palette with a transparent entry; and grey + alpha):
    over the server's 16 MP it is refused from the header; within `job predict`'s 50 MP its decode adds at most
    8 bytes a pixel (the decoded image and the RGB result) and the bands, not the 2.5-2.8 GB it took before."""
    proc = subprocess.run([sys.executable, "-c", BOMB, mode], env=job_env(), cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    refusal, numbers = proc.stdout.splitlines()
    assert refusal == "7000x7000 pixels exceeds limit of 16,000,000 pixels; refused before decoding"
    size, added_mb = map(int, numbers.split())
    assert added_mb < 49 * 8 + 30, added_mb
    assert mode != "1" or size < 10_000


def test_a_png_with_more_than_one_ihdr_header_is_refused_unopened():
    """Pillow keeps the last IHDR, libpng (browsers, sharp) refuses the file, and the server's router read the
    first: a 1x1 header then a 4000x4000 one was decoded as 16 MP on the event loop. One IHDR, or refused."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    def ihdr(w, h):
        return chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))

    idat = chunk(b"IDAT", zlib.compress(b"\0" * 33 * 32))
    good = b"\x89PNG\r\n\x1a\n" + ihdr(32, 32) + idat + chunk(b"IEND", b"")
    assert model_input(good, "one")[0].shape == (32, 32, 3)
    for name, blob in (
        ("two", b"\x89PNG\r\n\x1a\n" + ihdr(1, 1) + ihdr(32, 32) + idat + chunk(b"IEND", b"")),
        ("none", b"\x89PNG\r\n\x1a\n" + idat + chunk(b"IEND", b"")),
    ):
        with pytest.raises(ImageRejected, match="exactly one IHDR"):
            model_input(blob, name)

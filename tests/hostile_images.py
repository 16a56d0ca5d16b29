"""Hostile image files, built here byte by byte, for the image gate's tables (tests/e2e/test_hostile.py), its unit
tests and its fuzz tests: formats Pillow would hand to Ghostscript (PostScript, EPS with a binary header, PDF),
formats never accepted (SVG, ICO, PSD, JPEG 2000), polyglots, truncated files and headers that declare huge images.

`ghostscript_spy(folder)` is a `gs` that records that it ran (then runs the real one): put its folder first on PATH
and Pillow's EPS plugin, which runs `gs` from PATH, leaves the marker file behind if it is ever reached.
"""

import io
import os
import stat
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

# A PostScript program that, were it ever run by Ghostscript without -dSAFER, writes a file beside the marker.
POSTSCRIPT = (
    b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 32\n"
    b"/f (pwned-by-postscript) (w) file def f (ran) writestring f closefile\n"
    b"newpath 0 0 moveto 32 32 lineto stroke showpage\n%%EOF\n"
)


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_header(width: int, height: int, bit_depth: int = 8, colour: int = 0) -> bytes:
    """A PNG signature and IHDR only: what a decompression bomb looks like before its data."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)


def png_declaring(width: int, height: int, bit_depth: int = 8) -> bytes:
    """A complete PNG header, one tiny IDAT and IEND, declaring width x height pixels."""
    return png_header(width, height, bit_depth) + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b"")


def jpeg_declaring(width: int, height: int) -> bytes:
    """SOI, a baseline SOF0 declaring width x height (3 components), EOI: a header-only JPEG bomb."""
    sof = struct.pack(">BHHB", 8, height, width, 3) + b"".join(bytes([i, 0x11, 0]) for i in (1, 2, 3))
    return b"\xff\xd8" + b"\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof + b"\xff\xd9"


def gif_declaring(width: int, height: int) -> bytes:
    frame = b"," + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00" + frame + b";"


def bmp_declaring(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info), 0, 0, 14 + len(info)) + info


def tiff_declaring(width: int, height: int) -> bytes:
    """A little-endian TIFF with one IFD: width, height, 8-bit grey, one strip of 8 bytes."""
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (262, 3, 1, 1), (273, 4, 1, 8), (279, 4, 1, 8)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\0\0\0\0"
    return b"II*\x00" + struct.pack("<I", 16) + b"\0" * 8 + ifd


def encoded(array: np.ndarray, fmt: str = "PNG", mode: str | None = None, **save) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, fmt, **save) if mode else Image.fromarray(array).save(buf, fmt, **save)
    return buf.getvalue()


def real_png(seed: int = 0) -> bytes:
    return encoded(np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8))


def real_jpeg(seed: int = 0) -> bytes:
    return encoded(np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8), "JPEG")


def png_16bit(width: int = 32, height: int = 32, seed: int = 0) -> bytes:
    grey = np.random.default_rng(seed).integers(0, 65536, (height, width), dtype=np.uint16)
    return encoded(grey, "PNG")


# name -> bytes: each a file that must be refused, with exit 3, one error line, wherever an image enters. The names
# carry an image extension on purpose: the gate reads the format from the bytes.
HOSTILE = {
    "postscript.jpg": lambda: POSTSCRIPT,
    "eps-binary-header.png": lambda: (
        b"\xc5\xd0\xd3\xc6" + struct.pack("<IIIIII", 30, len(POSTSCRIPT), 0, 0, 0, 0) + b"\xff\xff" + POSTSCRIPT
    ),
    "document.jpg": lambda: b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n",
    "drawing.png": lambda: b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="32" height="32"/>',
    "bare-svg.jpg": lambda: b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>',
    "icon.png": lambda: b"\x00\x00\x01\x00\x01\x00\x20\x20" + b"\0" * 40,
    "layers.jpg": lambda: b"8BPS\x00\x01" + b"\0" * 40,
    "jpeg2000.jpg": lambda: b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\0" * 40,
    "postscript-then-jpeg.jpg": lambda: POSTSCRIPT + real_jpeg(),
    "png-then-postscript.png": lambda: b"\x89PNG\r\n\x1a\n" + POSTSCRIPT,
    "jpeg-magic-then-postscript.jpg": lambda: b"\xff\xd8\xff\xe0" + POSTSCRIPT,
    "truncated.png": lambda: real_png()[: len(real_png()) // 2],
    "truncated.jpg": lambda: real_jpeg()[: len(real_jpeg()) // 2],
    "header-only.png": lambda: png_header(32, 32),
    "truncated-16bit.png": lambda: png_16bit()[:200],
    "zero-width.png": lambda: png_declaring(0, 32),
    "bomb-16bit.png": lambda: png_declaring(8000, 8000, bit_depth=16),
    "just-over-50mp.png": lambda: png_declaring(7072, 7072),
    "huge-dimensions.png": lambda: png_declaring(100_000, 100_000),
    "bomb-header.jpg": lambda: jpeg_declaring(65_000, 65_000),
    "html.png": lambda: b"<html><script>alert(1)</script></html>",
}
# Accepted by `job predict` (any allowlisted format), refused by training (PNG and JPEG only): separate rows.
HOSTILE_PREDICT_ONLY = {
    "bomb.gif": lambda: gif_declaring(65_535, 65_535),
    "bomb.bmp": lambda: bmp_declaring(100_000, 100_000),
    "bomb.tif": lambda: tiff_declaring(100_000, 100_000),
}


def ghostscript_spy(folder: Path) -> tuple[Path, Path]:
    """(folder to put first on PATH, marker file): a `gs` that touches the marker and then runs the real one."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / "ghostscript-ran"
    real = next((p for p in ("/usr/bin/gs", "/usr/local/bin/gs") if os.path.exists(p)), "false")
    spy = folder / "gs"
    spy.write_text(f'#!/bin/sh\ntouch "{marker}"\nexec {real} "$@"\n')
    spy.chmod(spy.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return folder, marker

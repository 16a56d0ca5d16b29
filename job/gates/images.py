"""The image gate: every image that enters the job (a training image, an input of `job predict`, a request to the
model server) becomes pixels here and nowhere else, the same way everywhere.

Before Pillow sees a byte:
- the size is bounded (`MAX_IMAGE_BYTES`), and an empty file is refused;
- the format is read from the file's own first bytes (its magic number), never from its name, and must be in the
  declared allowlist `FORMATS` (or the caller's narrower one). PostScript, EPS (text or binary header) and PDF,
  which Pillow would hand to Ghostscript, SVG, ICO, PSD and everything else are refused unopened;
- a PNG must have exactly one IHDR header before its image data (`_png_headers`): Pillow keeps the last of several,
  libpng (browsers, sharp) refuses the file, and a router that reads the first would be lied to;
- Pillow is then told which one plugin may open it (`Image.open(..., formats=[sniffed])`), so no other plugin can
  claim the bytes, whatever they also look like (a polyglot is read as the format of its first bytes, or refused).
The pixel count is checked from the header, before anything is decoded (`MAX_PIXELS`, or the caller's lower
bound: the server's `SERVE_MAX_PIXELS`; a 6 KB PNG can declare 7000 x 7000 pixels). Within it, decoding costs at
most the decoded image and the RGB result (8 bytes a pixel) plus a few MB: the 16-bit and alpha steps below run
on bands of `BAND_PIXELS` in uint16, never on whole-image wide-integer arrays. Whatever Pillow raises on malformed
or truncated data becomes one `ImageRejected`.

Then the one preprocessing rule (`to_rgb`; docs/model-contract.md; the Node consumer and the page do the same):
1. the EXIF orientation is applied, as browsers do by default (CSS `image-orientation: from-image`);
2. 16-bit samples (modes I;16, I;16B, I) keep their high byte: 8-bit value = 16-bit value >> 8;
3. transparency (an alpha channel: LA, RGBA, PA; a palette or grey level marked transparent) is composited over
   opaque white `BACKGROUND`: out = round(c * a / 255) + (255 - a);
4. the result is 8-bit sRGB channels, RGB order; no colour profile is applied.
`model_input` then resizes to 32x32 with Pillow's antialiased bilinear filter when the image is another size.
"""

import io
import re
import warnings

from job.errors import DataError

# Pillow warns from 89 MP and refuses from 179 MP; this gate refuses from MAX_PIXELS (lower), so the warning would
# only repeat a refusal that follows.
warnings.filterwarnings("ignore", message="Image size .* could be decompression bomb")

# Beyond 64 MiB no photo is plausible; beyond 50 MP (a 6000 x 4000 photo is 24 MP) the decoded image would need
# gigabytes. Both are refused before decoding.
MAX_IMAGE_BYTES = 64 * 1024 * 1024
MAX_PIXELS = 50_000_000
# The model server's bound (docs/serving.md#memory): its images become 32x32, and a request is at most 4 MiB by
# default; 16 MP holds a 12 MP phone photo (4032 x 3024). Training decodes 32x32 only (other sizes are refused from
# the header); `job predict` keeps MAX_PIXELS for a user's own photos.
SERVE_MAX_PIXELS = 16_000_000
BAND_PIXELS = 1 << 18  # pixels per band of the 16-bit and alpha steps (about 10 MB of working arrays)
BACKGROUND = (255, 255, 255)
RESIZE_FILTER = "bilinear"

# Pillow plugin id -> what the file's first bytes must be. The allowlist: nothing else is ever opened.
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF", "PPM")
_MAGIC = (
    ("PNG", (b"\x89PNG\r\n\x1a\n",)),
    ("JPEG", (b"\xff\xd8\xff",)),
    ("GIF", (b"GIF87a", b"GIF89a")),
    ("BMP", (b"BM",)),
    ("TIFF", (b"II*\x00", b"MM\x00*")),
    ("PPM", (b"P1", b"P2", b"P3", b"P4", b"P5", b"P6")),
)
# Formats recognised only to name them in the refusal: never opened.
_REFUSED = (
    ("PostScript", (b"%!",)),
    ("EPS with a binary header", (b"\xc5\xd0\xd3\xc6",)),
    ("PDF", (b"%PDF",)),
    ("SVG or XML", (b"<?xml", b"<svg", b"<SVG", b"<!DOCTYPE")),
    ("ICO/CUR", (b"\x00\x00\x01\x00", b"\x00\x00\x02\x00")),
    ("Photoshop PSD", (b"8BPS",)),
    ("JPEG 2000", (b"\x00\x00\x00\x0cjP  ", b"\xff\x4f\xff\x51")),
    ("HTML", (b"<html", b"<HTML", b"<!doctype")),
)
_MODES = {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "I", "I;16", "I;16L"}
_MODES |= {"I;16B", "I;16N"}

_ACCEPTED = ", ".join(f.replace("WEBP", "WebP") for f in FORMATS)


class ImageRejected(DataError):
    """An image the gate refuses (exit code 3). str() names the image and says why; `reason` says why alone."""

    def __init__(self, what: str, reason: str):
        super().__init__(f"{what}: {reason}")
        self.what = what
        self.reason = reason

    def __reduce__(self):  # crosses process boundaries (decode workers, a server's pool) intact
        return type(self), (self.what, self.reason)


def sniff(head: bytes) -> str | None:
    """The allowlisted Pillow format that `head` (a file's first bytes, 16 are enough) starts with, or None."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    for fmt, magics in _MAGIC:
        if head.startswith(magics):
            if fmt == "PPM" and (len(head) < 3 or head[2:3] not in b" \t\r\n#"):
                return None
            return fmt
    return None


def refused_kind(head: bytes) -> str | None:
    """The name of a known format that is never opened (PostScript, EPS, PDF, SVG, ...), or None."""
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    for kind, magics in _REFUSED:
        if stripped.startswith(magics):
            return kind
    return None


def open_image(blob: bytes, what: str = "image", *, formats=FORMATS, max_pixels: int = MAX_PIXELS):
    """A Pillow image of `blob`, headers read and nothing decoded yet: the format sniffed from the bytes and in
    `formats`, opened by that format's plugin only, within `max_pixels`. Else ImageRejected."""
    from PIL import Image

    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise ImageRejected(what, "not image bytes")
    if len(blob) == 0:
        raise ImageRejected(what, "not a readable image (empty file, 0 bytes)")
    if len(blob) > MAX_IMAGE_BYTES:
        raise ImageRejected(what, f"{len(blob):,} bytes is over the {MAX_IMAGE_BYTES:,}-byte limit for an image")
    head = bytes(blob[:32])
    fmt = sniff(head)
    if fmt is None or fmt not in formats:
        accepted = _ACCEPTED if formats == FORMATS else ", ".join(formats)
        kind = refused_kind(head) or fmt or "an unrecognised format"
        raise ImageRejected(
            what, f"not an image in an accepted format ({kind}, refused unopened; accepted: {accepted})"
        )
    if fmt == "PNG" and _png_headers(blob) != 1:
        raise ImageRejected(what, "not a readable image (a PNG needs exactly one IHDR header before its image data)")
    try:
        im = Image.open(io.BytesIO(blob), formats=[fmt])
    except Image.DecompressionBombError as exc:  # over Pillow's own bound (about 179 MP), far over this one
        declared = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"declares {int(declared[1]):,} pixels, " if declared else ""
        raise ImageRejected(what, f"{size}exceeds limit of {max_pixels:,} pixels; refused before decoding") from None
    except Image.UnidentifiedImageError:
        raise ImageRejected(what, f"not a readable image (starts like {fmt} but its header is malformed)") from None
    except Exception as exc:  # Pillow's plugins raise many types on malformed headers (OSError, SyntaxError, ...)
        raise ImageRejected(what, f"not a readable image (malformed {fmt} header: {_why(exc)})") from None
    width, height = im.size
    if width < 1 or height < 1 or width * height > max_pixels:
        im.close()
        raise ImageRejected(
            what, f"{width}x{height} pixels exceeds limit of {max_pixels:,} pixels; refused before decoding"
        )
    if im.mode not in _MODES:
        im.close()
        raise ImageRejected(what, f"not a readable image (pixel mode {im.mode} is not supported)")
    return im


def _png_headers(blob) -> int:
    """The number of IHDR chunks before the first IDAT (or the end), from the chunk lengths alone."""
    count, i = 0, 8
    while i + 8 <= len(blob):
        kind = bytes(blob[i + 4 : i + 8])
        if kind == b"IDAT":
            break
        count += kind == b"IHDR"
        i += 12 + int.from_bytes(blob[i : i + 4], "big")
    return count


def to_rgb(im, what: str = "image"):
    """The one preprocessing rule (module docstring): EXIF orientation, 16-bit -> high byte, transparency over
    white; -> an RGB Pillow image. Decodes the pixels (and turns `im` upright in place: no second copy of a large
    image); ImageRejected when they are malformed or truncated. The 16-bit and alpha steps run on bands of at most
    `BAND_PIXELS` pixels, so the working memory is the decoded image, the RGB result and a few MB, whatever the
    size (docs/serving.md#memory)."""
    from PIL import ImageOps

    try:
        im.load()
        ImageOps.exif_transpose(im, in_place=True)
        if im.mode.startswith("I"):  # 16-bit (or 32-bit) grey: the high byte of 16 bits
            return _banded(im, _high_byte)
        transparent = "A" in im.mode or "a" in im.mode or "transparency" in im.info
        if not transparent:
            return im.convert("RGB")
        return _banded(im, _over_background)
    except ImageRejected:
        raise
    except Exception as exc:  # truncated data, decoder errors, malformed EXIF
        raise ImageRejected(what, f"not a readable image (unreadable or truncated {im.format}: {_why(exc)})") from None


def _banded(im, pixels):
    """`pixels(band)` -> uint8 [h, w, 3], applied to horizontal bands of `im` of at most BAND_PIXELS pixels,
    pasted into one new RGB image: the same values as on the whole image (every step is per pixel)."""
    from PIL import Image

    width, height = im.size
    out = Image.new("RGB", im.size)
    rows = max(1, BAND_PIXELS // width)
    for top in range(0, height, rows):
        box = (0, top, width, min(height, top + rows))
        out.paste(Image.fromarray(pixels(im.crop(box)), "RGB"), box[:2])
    return out


def _high_byte(band):
    """The grey level's high byte (of 16 bits), in three equal channels (as Pillow's L -> RGB)."""
    import numpy as np

    grey = (np.asarray(band).astype(np.int64).clip(0, 65535) >> 8).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def _over_background(band):
    """out = round(c * a / 255) + round(bg * (255 - a) / 255), in uint16 (c * a + 127 <= 65152)."""
    import numpy as np

    rgba = np.asarray(band.convert("RGBA"))
    colour, alpha = rgba[..., :3].astype(np.uint16), rgba[..., 3:4].astype(np.uint16)
    background = np.array(BACKGROUND, dtype=np.uint16)
    return ((colour * alpha + 127) // 255 + (background * (255 - alpha) + 127) // 255).astype(np.uint8)


def load_rgb(blob: bytes, what: str = "image", *, formats=FORMATS, max_pixels: int = MAX_PIXELS):
    """`open_image` then `to_rgb`: an RGB Pillow image of any size, or ImageRejected."""
    im = open_image(blob, what, formats=formats, max_pixels=max_pixels)
    try:
        return to_rgb(im, what)
    finally:
        im.close()


def model_input(
    blob: bytes,
    what: str = "image",
    *,
    size=(32, 32),
    resize: bool = True,
    formats=FORMATS,
    max_pixels: int = MAX_PIXELS,
):
    """-> (uint8 [h, w, 3], note): the model's input of one image. Another size is resized with the bilinear
    filter when `resize` (the note says so), else refused before decoding (training data must be `size`).
    `max_pixels`: the caller's bound, from the header (the server's is `SERVE_MAX_PIXELS`)."""
    import numpy as np
    from PIL import Image

    im = open_image(blob, what, formats=formats, max_pixels=max_pixels)
    try:
        if not resize and im.size not in (tuple(size), tuple(size)[::-1]):  # from the header: nothing decoded
            raise ImageRejected(what, f"{im.size[0]}x{im.size[1]} pixels, expected {size[0]}x{size[1]}")
        rgb = to_rgb(im, what)
    finally:
        im.close()
    note = None
    if rgb.size != tuple(size):
        if not resize:
            raise ImageRejected(what, f"{rgb.size[0]}x{rgb.size[1]} pixels, expected {size[0]}x{size[1]}")
        note = f"resized from {rgb.size[0]}x{rgb.size[1]} to {size[0]}x{size[1]} ({RESIZE_FILTER})"
        rgb = rgb.resize(tuple(size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8), note


def _why(exc: BaseException) -> str:
    from job.gates.text import shown

    return shown(str(exc) or type(exc).__name__, limit=160)

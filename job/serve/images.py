"""Image bytes in a request -> one uint8 [32, 32, 3] image, through the project's one image gate
(job.gates.images.model_input: the format from the bytes against the allowlist, the byte and pixel bounds, the
one preprocessing rule, the resize), exactly as `job predict` decodes a file, within the server's pixel bound
(`SERVE_MAX_PIXELS`, 16 MP, read from the header before anything is decoded). A refusal is a 400. The app runs
this in its decode pool, never on the event loop, except for the tiny images `fits_on_loop` picks
(docs/serving.md#memory)."""

import contextvars

from job.gates.images import SERVE_MAX_PIXELS, ImageRejected, model_input, open_image
from job.serve.http import HTTPError

IMAGE_TYPES = {"image/jpeg", "image/png", "application/x-image"}  # SageMaker's generic image type included
# An image body this small whose header declares this few pixels is decoded on the event loop (under about 0.2 ms;
# the two-thread pool's hand-off costs about 30 us of CPU a request). Anything else goes to the pool.
LOOP_BYTES = 16 * 1024
LOOP_PIXELS = 64 * 64
_PNG = b"\x89PNG\r\n\x1a\n"
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}  # JPEG frame headers


def fits_on_loop(blob: bytes) -> bool:
    """Whether a request body is a PNG or JPEG of at most LOOP_BYTES declaring at most LOOP_PIXELS pixels. Only
    routing: the gate still checks everything, and an unusual header is simply sent to the pool."""
    if len(blob) > LOOP_BYTES:
        return False
    if blob[:8] == _PNG and blob[12:16] == b"IHDR":
        return int.from_bytes(blob[16:20], "big") * int.from_bytes(blob[20:24], "big") <= LOOP_PIXELS
    i = 2 if blob[:2] == b"\xff\xd8" else len(blob)
    while i + 9 <= len(blob) and blob[i] == 0xFF:  # the segments before the frame header (APPn, DQT, DHT, ...)
        marker = blob[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker in _SOF:
            height, width = int.from_bytes(blob[i + 5 : i + 7], "big"), int.from_bytes(blob[i + 7 : i + 9], "big")
            return height * width <= LOOP_PIXELS
        else:
            i += 2 + int.from_bytes(blob[i + 2 : i + 4], "big")
    return False


_ON_LOOP = contextvars.ContextVar("decoding_on_the_event_loop", default=False)


class NotForTheLoop(Exception):
    """An image routed to the event loop by its first header whose size, as the decoder reads it, is over
    LOOP_PIXELS: the caller decodes it in the pool instead."""


def parse_on_loop(parse, body: bytes):
    """`parse(body)` on the event loop: every image it decodes is bounded by LOOP_PIXELS, the size Pillow will
    decode (not the header `fits_on_loop` read), or NotForTheLoop is raised before any pixel is decoded."""
    token = _ON_LOOP.set(True)
    try:
        return parse(body)
    finally:
        _ON_LOOP.reset(token)


def decode_image(blob: bytes, what: str):
    bound = SERVE_MAX_PIXELS
    try:
        if _ON_LOOP.get():
            with open_image(blob, what, max_pixels=SERVE_MAX_PIXELS) as im:  # headers only: refusals as in the pool
                if im.size[0] * im.size[1] > LOOP_PIXELS:
                    raise NotForTheLoop(what)
            bound = LOOP_PIXELS
        image, _note = model_input(blob, what, max_pixels=bound)
    except ImageRejected as exc:
        raise HTTPError(400, f"{what}: {exc.reason}") from None
    return image

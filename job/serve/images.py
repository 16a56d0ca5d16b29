"""Image bytes in a request -> one uint8 [32, 32, 3] image, through the project's one image gate
(job.gates.images.model_input: the format from the bytes against the allowlist, the byte and pixel bounds, the
one preprocessing rule, the resize), exactly as `job predict` decodes a file, within the server's pixel bound
(`SERVE_MAX_PIXELS`, 16 MP, read from the header before anything is decoded). A refusal is a 400. The app runs
this in its decode pool only, never on the event loop (docs/serving.md#memory)."""

from job.gates.images import SERVE_MAX_PIXELS, ImageRejected, model_input
from job.serve.http import HTTPError

IMAGE_TYPES = {"image/jpeg", "image/png", "application/x-image"}  # SageMaker's generic image type included


def decode_image(blob: bytes, what: str):
    try:
        image, _note = model_input(blob, what, max_pixels=SERVE_MAX_PIXELS)
    except ImageRejected as exc:
        raise HTTPError(400, f"{what}: {exc.reason}") from None
    return image

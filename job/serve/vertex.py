"""Vertex AI's prediction format, on the routes AIP_PREDICT_ROUTE and AIP_HEALTH_ROUTE name (the port is
AIP_HTTP_PORT):

    {"instances": [INSTANCE, ...]}  ->  {"predictions": [{"label": ..., "probabilities": [...]}, ...]}

An INSTANCE is one image: pixels as nested [32, 32, 3] integers 0..255, or {"b64": base64 JPEG/PNG bytes}
(Vertex's convention for binary values), either of them also under an "image" key.
"""

import base64
import binascii

import numpy as np

from job.errors import DataError
from job.gates.json_doc import load_json
from job.serve.http import HTTPError
from job.serve.images import decode_image
from job.serve.tensors import IMAGE_SHAPE, batch_bound, from_values


def parse_instances(instances, max_batch: int) -> np.ndarray:
    if not isinstance(instances, list) or not instances:
        raise HTTPError(400, "instances must be a non-empty list")
    batch_bound(len(instances), max_batch, "instances")
    return np.stack([_instance(value, i) for i, value in enumerate(instances)])


def _instance(value, i: int) -> np.ndarray:
    what = f"instance {i}"
    if isinstance(value, dict) and set(value) == {"image"}:
        value = value["image"]
    if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        try:
            blob = base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError):
            raise HTTPError(400, f"{what}: b64 is not valid base64") from None
        return decode_image(blob, what)
    if isinstance(value, list):
        image = from_values(value, None, 1, what)
        if image.shape[1:] != IMAGE_SHAPE or len(image) != 1:
            raise HTTPError(400, f"{what}: pixels must be nested [32, 32, 3]")
        return image[0]
    raise HTTPError(400, f"{what}: expected [32, 32, 3] pixels or {{'b64': image bytes}}")


def parse_request(body: bytes, max_batch: int, max_bytes: int) -> np.ndarray:
    try:
        doc = load_json(body, "the prediction request", max_bytes=max_bytes, expect=dict)
    except DataError as exc:
        raise HTTPError(400, str(exc)) from None
    if "instances" not in doc:
        raise HTTPError(400, 'expected {"instances": [...]}')
    return parse_instances(doc["instances"], max_batch)

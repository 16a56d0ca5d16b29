"""SageMaker's inference container contract: GET /ping (200 once ready), POST /invocations on port 8080.

/invocations takes, by Content-Type:
    image/jpeg, image/png, application/x-image   one image's bytes (any size; decoded and resized like `job predict`)
    application/json                             {"instances": [...]} as Vertex AI, or a bare [N, 32, 32, 3] or
                                                 [32, 32, 3] array of integers 0..255
and answers {"predictions": [{"label": ..., "probabilities": [...]}, ...]}.
"""

import numpy as np

from job.errors import DataError
from job.gates.json_doc import load_json
from job.serve import vertex
from job.serve.http import HTTPError
from job.serve.images import IMAGE_TYPES, decode_image
from job.serve.tensors import from_values


def parse_invocation(content_type: str | None, body: bytes, max_batch: int, max_bytes: int) -> np.ndarray:
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind in IMAGE_TYPES:
        return decode_image(body, "the image")[None]
    if kind != "application/json":
        raise HTTPError(415, f"Content-Type {kind or 'missing'}: send application/json, image/jpeg or image/png")
    try:
        doc = load_json(body, "the invocation", max_bytes=max_bytes, expect=(dict, list))
    except DataError as exc:
        raise HTTPError(400, str(exc)) from None
    if isinstance(doc, dict):
        if "instances" not in doc:
            raise HTTPError(400, 'expected {"instances": [...]} or an array of pixels')
        return vertex.parse_instances(doc["instances"], max_batch)
    return from_values(doc, None, max_batch, "the tensor")

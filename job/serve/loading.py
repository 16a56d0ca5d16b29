"""The model a server answers with: loaded through `job predict`'s verified path (with --public-key or
--trust-certificate, the run's model.sig first; then the model file hashed against the run's manifest; then the
model contract), then warmed up at the batch sizes it will see."""

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from job.contract import IMAGE_HEIGHT, IMAGE_WIDTH, INPUT_NAME, OUTPUT_NAME
from job.errors import ModelError
from job.predict import load_session, resolve_model


@dataclass
class Model:
    session: object
    class_names: list[str]
    run_id: str
    load_seconds: float = 0.0
    warmup_seconds: float = 0.0
    meta: dict = field(default_factory=dict)

    def run(self, images):
        """float32 [N, C] for uint8 [N, 32, 32, 3]; ModelError when ONNX Runtime fails on valid input."""
        try:
            return self.session.run([OUTPUT_NAME], {INPUT_NAME: images})[0]
        except Exception as exc:  # onnxruntime's own exception classes
            raise ModelError(f"ONNX Runtime failed running the model ({str(exc).splitlines()[0][:200]})") from None


def load(spec: str, *, threads: int = 0, int8: bool = False, trust=None) -> Model:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="serve-") as download_dir:  # the session holds the bytes; removed
        path = resolve_model(spec, Path(download_dir), int8, trust)
        session, class_names = load_session(path, threads, spin=False)
    meta = session.get_modelmeta().custom_metadata_map
    return Model(session, class_names, meta.get("run_id", ""), time.monotonic() - started, meta=dict(meta))


def warm_up(model: Model, max_batch: int, runs: int) -> None:
    """Run every batch size's first inference (ONNX Runtime plans its buffers per shape) before readiness."""
    import numpy as np

    started = time.monotonic()
    for _ in range(runs):
        for size in sorted({1, max_batch}):
            model.run(np.zeros((size, IMAGE_HEIGHT, IMAGE_WIDTH, 3), np.uint8))
    model.warmup_seconds = time.monotonic() - started


__all__ = ["Model", "ModelError", "load", "warm_up"]

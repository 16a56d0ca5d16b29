"""Checkpoints for preemption-safe training: `<checkpoint_dir>/<run_id>/{state.json, model-*.keras}`.

The model file (weights + optimizer state) is written first under a unique name, then `state.json`
(epoch, step, history, the config fingerprint and the model file's sha256) replaces the old one: a
crash at any point leaves the previous checkpoint intact. On resume, a checkpoint whose fingerprint
or hash does not match is an error (exit 7), never a silent restart from scratch.
"""

import json
import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from job.config.parts import TrainConfig
from job.errors import CheckpointError
from job.gates.json_doc import load_json
from job.storage import open_blobs
from job.storage.files import sha256_file
from job.storage.layout import CHECKPOINT_STATE, MODEL_KERAS

log = logging.getLogger(__name__)

# The only names a checkpoint may refer to: a model file in the checkpoint folder itself. A state.json naming
# "../../x.keras" would otherwise load, and later delete, a file outside it.
MODEL_FILE = re.compile(r"^model-e\d{4,}-s\d{6,}\.keras$")
MAX_MODEL_BYTES = 2 * 1024**3


def fingerprint(training: TrainConfig, splits) -> dict:
    """What a checkpoint must have been trained with to resume: the settings that shape the weights (by setting
    name, the keys of every checkpoint so far; not precision, see TrainConfig) and the data's identity."""
    fp = training.fingerprint()
    fp["data_sha256"] = splits.info.get("source_sha256", "")
    fp["sizes"] = splits.info.get("sizes", {})
    fp["class_names"] = splits.class_names
    return fp


def check_fingerprint(where: str, fp: dict, theirs) -> None:
    """A checkpoint resumes only the configuration that wrote it (exit 7 otherwise, naming what differs). Both
    sides as JSON has them: a checkpoint stores its fingerprint as JSON."""
    if theirs == json.loads(json.dumps(fp)):
        return
    theirs = theirs if isinstance(theirs, dict) else {}
    diff = sorted(k for k in set(fp) | set(theirs) if fp.get(k) != theirs.get(k))
    raise CheckpointError(
        f"checkpoint {where} was written by a different configuration (differs in: "
        f"{', '.join(diff) or 'format'}); use another --run-id or --checkpoint-dir"
    )


def check_position(where: str, epoch: int, step: int, epochs: int) -> None:
    """A checkpoint past this run's end (it finished `epoch` epochs and `step` steps of the next) cannot resume it."""
    if epoch > epochs or (epoch == epochs and step):
        raise CheckpointError(
            f"checkpoint {where} is at epoch {epoch + 1}, step {step}, beyond this run's --epochs {epochs}; use "
            "another --run-id or --checkpoint-dir"
        )


@dataclass
class State:
    model: object
    epoch: int
    step: int
    history: list
    info: dict


class Checkpoints:
    def __init__(self, root: str, run_id: str, s3_options=None):
        self.location = f"{root.rstrip('/')}/{run_id}"
        self.blobs = open_blobs(self.location, s3_options)

    def probe(self) -> None:
        """The location is writable: checked at start, like the store, not after the first epoch."""
        self.blobs.probe()

    def save(self, model, fp: dict, *, epoch: int, step: int, history: list) -> None:
        name = f"model-e{epoch:04d}-s{step:06d}.keras"
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / name
            model.save(local)
            state = {
                "epoch": epoch,
                "step": step,
                "history": history,
                "fingerprint": fp,
                "model_file": name,
                "model_sha256": sha256_file(local),
            }
            self.blobs.put_file(name, local)
            previous = self._read_state(must_parse=False)
            self.blobs.write(CHECKPOINT_STATE, json.dumps(state, indent=1).encode())
        old = previous.get("model_file") if previous else None
        if isinstance(old, str) and old != name and MODEL_FILE.match(old):
            self.blobs.delete(old)
        log.info("checkpoint saved: %s (epoch %d, step %d)", self.location, epoch, step)

    def _read_state(self, must_parse: bool = True) -> dict | None:
        raw = self.blobs.read(CHECKPOINT_STATE)
        if raw is None:
            return None
        try:  # the JSON gate; NaN allowed: a diverged epoch's loss is recorded as NaN in the history
            return load_json(raw, CHECKPOINT_STATE, error=CheckpointError, allow_nan=True, expect=dict)
        except CheckpointError as exc:
            if not must_parse:
                return None
            raise CheckpointError(
                f"checkpoint {self.location}/state.json is corrupt ({exc}); delete "
                f"{self.location} to start over, or use another --run-id"
            ) from None

    def check(self, fp: dict, epochs: int) -> dict | None:
        """state.json, if there is one, checked against this run without TensorFlow: its fingerprint, model file
        name, position and `epochs` (CheckpointError, exit 7). The pipeline calls it right after the data stage, so
        a checkpoint this run cannot resume is refused in well under a second instead of after TensorFlow starts."""
        state = self._read_state()
        if state is None:
            return None
        where = self.location
        check_fingerprint(where, fp, state.get("fingerprint"))
        model_file, epoch, step, history = (
            state.get("model_file"),
            state.get("epoch"),
            state.get("step"),
            state.get("history", []),
        )
        if not (isinstance(model_file, str) and MODEL_FILE.match(model_file)):
            raise CheckpointError(
                f"checkpoint {where}/state.json names model file {model_file!r}, which is not a "
                f"model file of this checkpoint folder; delete {where} to start over"
            )
        if type(epoch) is not int or type(step) is not int or epoch < 0 or step < 0 or not isinstance(history, list):
            raise CheckpointError(
                f"checkpoint {where}/state.json has malformed epoch/step/history (corrupt); delete "
                f"{where} to start over"
            )
        check_position(where, epoch, step, epochs)
        return state

    def load(self, fp: dict, epochs: int) -> State | None:
        state = self.check(fp, epochs)
        if state is None:
            return None
        where, model_file = self.location, state["model_file"]
        epoch, step, history = state["epoch"], state["step"], state.get("history", [])
        import keras

        from job.train import optim  # noqa: F401  (registers the custom optimizer and schedule with Keras)

        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / MODEL_KERAS
            if not self.blobs.get_file(model_file, local, MAX_MODEL_BYTES):
                raise CheckpointError(
                    f"checkpoint {where}: model file {state.get('model_file')} is missing; delete {where} to start over"
                )
            if sha256_file(local) != state.get("model_sha256"):
                raise CheckpointError(
                    f"checkpoint {where}: model file does not match its sha256 (corrupt); delete {where} to start over"
                )
            try:
                model = keras.models.load_model(local)
            except Exception as exc:
                raise CheckpointError(f"checkpoint {where}: model file cannot be loaded ({exc})") from None
        return State(model, epoch, step, history, {"location": where, "epoch": epoch, "step": step})

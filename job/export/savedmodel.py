"""TensorFlow SavedModel export through keras.export.ExportArchive (serving signature 'serving_default')."""

import contextlib
import io
from pathlib import Path

import keras


def export_savedmodel(model, serve_fn, path: Path) -> None:
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serve_fn)
    with contextlib.redirect_stdout(io.StringIO()):  # ExportArchive prints a long endpoint listing
        archive.write_out(str(path))


def load_savedmodel(path: Path):
    """The reloaded `serving_default` signature; the closure keeps the loaded object (its variables) alive."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    signature = loaded.signatures["serving_default"]

    def serve(image):
        return signature(image=image)

    serve.loaded = loaded
    return serve

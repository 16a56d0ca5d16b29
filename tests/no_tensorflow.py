"""The one TensorFlow blocker of the tests: an import hook under which `import tensorflow` (or keras, tf2onnx)
raises. The unit tier installs it in its own process (tests/unit/conftest.py); a test that proves a path never
needs TensorFlow prepends `PRELUDE` to the `python -c` code of its child; the forked CLI runner reads `HEAVY`
to know when the parent can no longer fork."""

import sys
from pathlib import Path

HEAVY = ("tensorflow", "keras", "tf2onnx")


class BlockTensorFlow:
    """A meta-path finder that refuses the heavy packages, naming the module and where the block came from."""

    def __init__(self, why: str = "blocked in this process"):
        self.why = why

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HEAVY:
            raise ImportError(f"{name} is {self.why}")


def block_tensorflow(why: str = "blocked in this process") -> None:
    """From now on this process cannot import TensorFlow, Keras or tf2onnx (first in line, before any finder)."""
    sys.meta_path.insert(0, BlockTensorFlow(why))


def loaded_heavy() -> set[str]:
    """The heavy packages this process has imported already."""
    return {m for m in HEAVY if m in sys.modules}


# Prepended to `python -c` code that must run without TensorFlow: the child installs this same blocker first, so a
# check that "TensorFlow was not needed" fails when it is.
PRELUDE = (
    f"import sys\nsys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n"
    "from no_tensorflow import block_tensorflow\nblock_tensorflow()\n"
)

"""The unit tier: no TensorFlow, no servers.

`make test` runs this tier in its own pytest process with TensorFlow, Keras and tf2onnx made unimportable
(UNIT_TIER_BLOCKS_TENSORFLOW=1 installs an import hook before any test module is collected), so a unit-tier module
or anything it reaches that imports them fails at collection. Run together with the other tiers (plain `pytest`),
the fixture below still fails a unit test that loads them."""

import os
import sys

import pytest

HEAVY = ("tensorflow", "keras", "tf2onnx")


class _BlockTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HEAVY:
            raise ImportError(f"{name} is unimportable in the unit tier (move the test to tests/tf or tests/e2e)")


if os.environ.get("UNIT_TIER_BLOCKS_TENSORFLOW") == "1":
    loaded = [m for m in HEAVY if m in sys.modules]
    assert not loaded, f"{loaded} imported before the unit tier started"
    sys.meta_path.insert(0, _BlockTensorFlow())


@pytest.fixture(autouse=True)
def _no_tensorflow():
    before = {m for m in HEAVY if m in sys.modules}
    yield
    loaded = {m for m in HEAVY if m in sys.modules} - before
    assert not loaded, f"a unit test imported {', '.join(sorted(loaded))}: move it to tests/tf or tests/e2e"

"""The unit tier: no TensorFlow, no servers.

`make test` runs this tier in its own pytest process with TensorFlow, Keras and tf2onnx made unimportable
(UNIT_TIER_BLOCKS_TENSORFLOW=1 installs the tests' one blocker, tests/no_tensorflow.py, before any test module is
collected), so a unit-tier module or anything it reaches that imports them fails at collection. Run together with
the other tiers (plain `pytest`), the fixture below still fails a unit test that loads them."""

import os

import pytest
from no_tensorflow import block_tensorflow, loaded_heavy

if os.environ.get("UNIT_TIER_BLOCKS_TENSORFLOW") == "1":
    loaded = loaded_heavy()
    assert not loaded, f"{sorted(loaded)} imported before the unit tier started"
    block_tensorflow("unimportable in the unit tier (move the test to tests/tf or tests/e2e)")


@pytest.fixture(autouse=True)
def _no_tensorflow():
    before = loaded_heavy()
    yield
    loaded = loaded_heavy() - before
    assert not loaded, f"a unit test imported {', '.join(sorted(loaded))}: move it to tests/tf or tests/e2e"

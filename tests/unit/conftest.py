"""The unit tier: no TensorFlow, no servers. A unit test that imports TensorFlow (directly or through the job's
code) fails here, so the tier stays fast and the TensorFlow-free paths stay TensorFlow-free."""

import sys

import pytest

HEAVY = ("tensorflow", "keras")


@pytest.fixture(autouse=True)
def _no_tensorflow():
    before = {m for m in HEAVY if m in sys.modules}
    yield
    loaded = {m for m in HEAVY if m in sys.modules} - before
    assert not loaded, f"a unit test imported {', '.join(sorted(loaded))}: move it to tests/tf or tests/e2e"

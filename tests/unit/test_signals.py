"""Signals around a commit: held during it, then either dropped (the commit completed) or re-delivered."""

import os
import signal

import pytest

from job.errors import Terminated
from job.runtime.signals import deferred_signals


@pytest.fixture
def terminate_raises():
    def handler(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_a_signal_during_a_completed_commit_waits_for_it_and_is_not_raised(terminate_raises):
    done = []
    with deferred_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        done.append("renamed")  # would not run if the signal had interrupted the block
    assert done == ["renamed"]


def test_a_signal_during_a_failed_commit_is_delivered_after_it(terminate_raises):
    with pytest.raises(Terminated), deferred_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        raise OSError("the rename failed")


def test_outside_the_block_a_signal_acts_at_once(terminate_raises):
    with pytest.raises(Terminated):
        os.kill(os.getpid(), signal.SIGTERM)
        signal.pause()  # never reached: the handler raised

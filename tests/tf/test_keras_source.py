"""`--data keras` (keras.datasets' downloader) without network: a data error naming the offline alternatives."""

import socket

import pytest

from job import data
from job.errors import DataError


def _offline() -> bool:
    try:
        socket.create_connection(("www.cs.toronto.edu", 443), timeout=2).close()
        return False
    except OSError:
        return True


def test_keras_source_fails_fast_offline_naming_alternatives(tmp_path, monkeypatch):
    if not _offline():  # checked when the test runs, never while collecting
        pytest.skip("this check is about the offline behaviour")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(DataError, match="offline, pass --data"):
        data.load("keras", tmp_path)

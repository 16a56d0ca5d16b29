"""export-serving's model name and destination checks, and the mode of the folders it and `runs download` make."""

import os

import pytest

from job.errors import ConfigError
from job.serving import MAX_NAME, _inside, check_model_name
from job.storage.files import folder_mode


@pytest.mark.parametrize("name", ["cifar10", "a", "m" * MAX_NAME, "A-b_9", "9lives"])
def test_model_names_that_every_server_takes(name):
    assert check_model_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "m" * (MAX_NAME + 1), "a/b", "..", ".x", "-x", "_x", "modèle", "٣", "a b", "x\n::error::y", "a\x1b[2J"]
)
def test_model_names_refused_as_usage_errors(name):
    with pytest.raises(ConfigError) as err:
        check_model_name(name)
    assert "\n" not in str(err.value) and "\x1b" not in str(err.value)


@pytest.mark.parametrize(
    "child,parent,inside",
    [
        ("team", "team", True),
        ("team/serving", "team", True),
        ("teamx/serving", "team", False),
        ("other", "team", False),
        ("anything", "", True),  # a store at the bucket's root holds every prefix
        ("/a/b/c", "/a/b", True),
        ("/a/bc", "/a/b", False),
    ],
)
def test_inside(child, parent, inside):
    assert _inside(child, parent) is inside


def test_folder_mode_follows_the_umask():
    old = os.umask(0o027)
    try:
        assert folder_mode() == 0o750
        assert os.umask(0o027) == 0o027  # left as it was
    finally:
        os.umask(old)

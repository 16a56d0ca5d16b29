"""The one exit-code table (job.errors) against --help and the README, and signals that are not errors."""

import re

import pytest

from helpers import ROOT
from job import errors


def readme_exit_codes() -> dict[int, str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d+) \| (.+?) \| (.*?) \|$", section, re.M)
    return {int(code): (meaning, todo) for code, meaning, todo in rows}


def test_readme_exit_code_table_is_the_errors_table():
    assert readme_exit_codes() == {code: (meaning, todo) for code, (meaning, todo) in errors.EXIT_CODES.items()}


def test_help_epilogue_lists_every_code():
    text = errors.exit_codes_help()
    assert [int(m) for m in re.findall(r"^  (\d+) ", text, re.M)] == list(errors.EXIT_CODES)


def test_every_error_class_has_its_own_documented_code():
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.JobError)]
    codes = [c.exit_code for c in classes if c is not errors.JobError]
    assert len(codes) == len(set(codes)) and set(codes) <= set(errors.EXIT_CODES)


@pytest.mark.parametrize("signal_class", [errors.Preempted, errors.Terminated])
def test_signals_pass_through_every_except_exception(signal_class):
    with pytest.raises(signal_class):
        try:
            raise signal_class()
        except Exception:  # what a broad handler in the job's code would do
            pytest.fail("a signal was swallowed as an error")

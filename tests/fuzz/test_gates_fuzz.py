"""Property tests of the JSON, text and class-name gates (job/gates/): whatever they are given, each returns a value
that keeps its promise or raises its one documented error type, within a bounded time. No TensorFlow (the unit
tier's blocker applies here too). FUZZ_EXAMPLES scales every property (the default keeps the tier under ~30 s)."""

import json
import math
import os
import re
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from unit.conftest import _no_tensorflow  # noqa: F401 (the unit tier's TensorFlow blocker, autouse)

from job.errors import ConfigError, DataError
from job.gates.class_names import MAX_CLASSES, MAX_LENGTH, check_class_names
from job.gates.json_doc import MAX_DEPTH, load_json
from job.gates.text import json_line, markdown_cell, printable, shown

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "100"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=1000,  # ms per example: every gate is linear in its input
    database=None,  # nothing written into the checkout
    suppress_health_check=[HealthCheck.too_slow],
)

# What must never reach a terminal raw: C0/C1 controls, DEL, line and paragraph separators, format characters and
# lone surrogates (and the workflow-command markers, checked separately).
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _unsafe_char(c: str) -> bool:
    return bool(_UNSAFE.match(c)) or unicodedata.category(c) in ("Cf", "Cs")


# Text a hostile source would send: any code point (lone surrogates included), biased towards the dangerous ones.
DANGER = st.sampled_from(
    ["\n", "\r", "\x1b", "\x1b[2J", "\x9b", "\x00", "\u2028", "\u202e", "\u200b", "\ufeff", "::", ":", "##[", "#"]
    + ["::error::", "::stop-commands::", "\udcff", "\x85", "\t", " ", "é", "e\u0301", "<img src=x onerror=1>"]
)
HOSTILE_TEXT = st.lists(st.one_of(DANGER, st.text(max_size=8)), max_size=20).map("".join)

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=30,
)


def _depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 1


def _has_surrogate(value) -> bool:
    if isinstance(value, str):
        return bool(re.search(r"[\ud800-\udfff]", value))
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    return isinstance(value, list) and any(map(_has_surrogate, value))


# ------------------------------------------------------------------------------------------- the JSON gate


@FUZZ
@given(st.binary(max_size=2048) | HOSTILE_TEXT)
def test_load_json_returns_or_raises_its_error_for_any_input(raw):
    try:
        load_json(raw, "doc", error=ConfigError)
    except ConfigError as exc:
        assert str(exc).startswith("doc: ") and "\n" not in str(exc)


@FUZZ
@given(JSON_VALUES)
def test_load_json_gives_back_every_document_within_its_bounds(value):
    text = json.dumps(value)
    if _depth(value) > MAX_DEPTH:
        with pytest.raises(DataError, match="nested more than"):
            load_json(text, "doc")
    elif _has_surrogate(value):  # `"\ud800"` is JSON syntax, but no character
        try:
            parsed = load_json(text, "doc")
        except DataError as exc:
            assert "unpaired surrogate" in str(exc)
        else:
            assert not _has_surrogate(parsed)  # two adjacent halves parse as one character
    else:
        assert load_json(text, "doc") == value
        assert load_json(text.encode(), "doc") == value


@FUZZ
@given(
    st.integers(min_value=MAX_DEPTH + 1, max_value=200_000),
    st.sampled_from(["[", '{"a":', "[1,"]),
    st.booleans(),
)
def test_deep_nesting_is_refused_with_one_line_never_a_recursion_error(depth, opener, closed):
    closer = {"[": "]", '{"a":': "}", "[1,": "]"}[opener]
    raw = opener * depth + ("0" + closer * depth if closed else "")
    with pytest.raises(DataError) as refused:
        load_json(raw, "doc", max_bytes=len(raw) + 1)
    assert "nested more than" in str(refused.value) or "not valid JSON" in str(refused.value)


@FUZZ
@given(st.sampled_from(["NaN", "Infinity", "-Infinity"]), JSON_VALUES)
def test_nan_and_infinity_are_refused_unless_allowed(constant, value):
    raw = json.dumps([value, "CONST"]).replace('"CONST"', constant)
    with pytest.raises(DataError, match="not valid JSON"):
        load_json(raw, "doc")
    parsed = load_json(raw, "doc", allow_nan=True)
    assert isinstance(parsed[1], float) and not math.isfinite(parsed[1])


@FUZZ
@given(st.integers(min_value=0, max_value=4096), st.integers(min_value=1, max_value=4096))
def test_the_size_bound_is_checked_before_parsing(size, limit):
    raw = b" " * size + b"1"
    if len(raw) > limit:
        with pytest.raises(DataError, match="limit for this document"):
            load_json(raw, "doc", max_bytes=limit)
    else:
        assert load_json(raw, "doc", max_bytes=limit) == 1


# ------------------------------------------------------------------------------------------- the text gate


@FUZZ
@given(HOSTILE_TEXT | st.text(), st.integers(min_value=1, max_value=400))
def test_shown_is_one_safe_line(text, limit):
    out = shown(text, limit)
    assert not any(_unsafe_char(c) for c in out)
    assert len(out.splitlines()) <= 1  # str.splitlines also splits on \x1c-\x1e, \x85, \u2028, \u2029
    assert "::" not in out and "##[" not in out
    assert len(out) <= 6 * limit + 3  # an escape is at most 6 characters per character shown, then `...`
    if text and len(text) <= limit and not any(_unsafe_char(c) for c in text) and ":" not in text and "#" not in text:
        assert out == text  # ordinary text is shown as it is


@FUZZ
@given(st.from_type(object).filter(lambda v: not isinstance(v, str)))
def test_shown_takes_any_value(value):
    out = shown(value)
    assert isinstance(out, str) and not any(_unsafe_char(c) for c in out)


@FUZZ
@given(HOSTILE_TEXT)
def test_printable_keeps_lines_and_no_line_is_a_workflow_command(text):
    out = printable(text)
    assert out.count("\n") == text.count("\n")
    for line in out.split("\n"):
        assert not any(_unsafe_char(c) for c in line) and "::" not in line and "##[" not in line


@FUZZ
@given(HOSTILE_TEXT)
def test_markdown_cell_cannot_break_a_table_or_start_markup(text):
    out = markdown_cell(text)
    assert not set(out) & set("|`<>[]\n\r") and not any(_unsafe_char(c) for c in out)


@FUZZ
@given(JSON_VALUES | HOSTILE_TEXT)
def test_json_line_is_one_ascii_line_that_decodes_to_the_same_value(value):
    line = json_line(value)
    assert line.isascii() and "\n" not in line and "##[" not in line and not line.startswith(":")
    assert json.loads(line) == value


# ------------------------------------------------------------------------------------------- the class-name gate

NAMES = st.lists(HOSTILE_TEXT | st.text(max_size=70), max_size=12)


@FUZZ
@given(NAMES | st.lists(st.integers() | st.none(), max_size=3), st.none() | st.integers(min_value=0, max_value=12))
def test_class_names_are_accepted_only_when_every_renderer_is_safe(names, count):
    try:
        accepted = check_class_names(names, "names", count=count)
    except DataError as exc:
        assert str(exc).startswith("names: ") and "\n" not in str(exc)
        return
    assert accepted == names and 1 <= len(names) <= MAX_CLASSES and (count is None or len(names) == count)
    labels = "".join(f"{c}\n" for c in accepted)  # labels.txt (export-serving)
    assert len(labels.splitlines()) == len(accepted)
    keys = {unicodedata.normalize("NFC", c).casefold() for c in accepted}
    assert len(keys) == len(accepted)  # predict --json keys never merge
    for name in accepted:
        assert 1 <= len(name) <= MAX_LENGTH and name == name.strip()
        assert not any(_unsafe_char(c) for c in name)


@FUZZ
@given(st.lists(st.text(alphabet="abcdefghij", min_size=1, max_size=10), min_size=1, max_size=10, unique=True))
def test_ordinary_class_names_pass_and_a_case_twin_is_refused(names):
    assert check_class_names(names, "names") == names
    twin = names[0].upper() if names[0].upper() != names[0] else names[0].lower()
    with pytest.raises(ConfigError, match="are the same name"):
        check_class_names([*names, twin], "names", error=ConfigError)

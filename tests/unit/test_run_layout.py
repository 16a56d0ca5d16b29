"""A run folder's and a store's file names are written down once, in job/storage/layout.py: a string literal that
is one of them (or a path ending in one) anywhere else in job/ fails here. Prose that mentions a file (a docstring,
a help text, an error message) is not a path and is not counted."""

import ast
from pathlib import Path

from job.storage import layout

JOB = Path(layout.__file__).resolve().parents[1]
NAMES = {value for key, value in vars(layout).items() if key.isupper() and isinstance(value, str) and "." in value}
NAMES.add(layout.SAVEDMODEL_DIRS["runs"])  # the other layouts' folders ("1", ".") are too short to tell apart


def _spelled(text: str) -> str | None:
    """The layout name a literal spells as a path: the whole of it, or one segment of a path without spaces."""
    if " " in text or "\n" in text:
        return None
    return next((segment for segment in text.split("/") if segment in NAMES), None)


def literals(source: str) -> list[tuple[int, str]]:
    """(line, name) of each string literal (f-string parts included) in `source` that spells a layout name."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            name = _spelled(node.value)
            if name:
                found.append((node.lineno, name))
    return sorted(found)


def test_the_finder_sees_paths_and_not_prose():
    sample = '''"""The run's metrics.json and model.onnx."""
a = run_dir / "metrics.json"
b = f"{uri}/manifest.json"
c = "saved_model/saved_model.pb"
d = f"{where}: metrics.json is too large"
e = "metrics"
'''
    assert literals(sample) == [(2, "metrics.json"), (3, "manifest.json"), (4, "saved_model")]


def test_the_names_cover_a_run_folder_and_a_store():
    assert {"model.onnx", "model.int8.onnx", "metrics.json", "manifest.json", "latest.json", "config.json"} <= NAMES
    assert {"model.sig", "provenance.json", "model.keras", "MODEL_CARD.md", "labels.txt", "saved_model"} <= NAMES


def test_no_run_folder_file_name_is_spelled_outside_the_layout_module():
    offenders = [
        f"{path.relative_to(JOB.parent)}:{line}: {name!r}"
        for path in sorted(JOB.rglob("*.py"))
        if path.resolve() != Path(layout.__file__).resolve()
        for line, name in literals(path.read_text())
    ]
    assert not offenders, "use the constants of job/storage/layout.py:\n" + "\n".join(offenders)

"""docs/threat-model.md names every input the code reads: each flag of every command, and each environment
variable read anywhere under job/ (besides the `JOB_<SETTING>` twin of a flag, which its row covers). A new
input without its row fails here."""

import argparse
import ast
import dataclasses
import re

from helpers import ROOT
from job.cli import build_parser
from job.config.settings import ENV_PREFIX, Config

DOC = (ROOT / "docs" / "threat-model.md").read_text()
ENV_NAME = re.compile(r"^[A-Z][A-Z0-9]*(_[A-Z0-9]+)+$|^HOSTNAME$")


def _flags(parser: argparse.ArgumentParser, seen=None) -> set[str]:
    seen = set() if seen is None else seen
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _flags(sub, seen)
        seen.update(o for o in action.option_strings if o.startswith("--") and o not in ("--help", "--version"))
    return seen


def _env_names() -> set[str]:
    """Upper-case string constants used as environment keys: `env[...]`, `env.get(...)`, `os.getenv(...)`,
    `"X" in env`, `environ.setdefault(...)`, and the tuples of names that code iterates over to look them up."""
    names, identifiers = set(), set()
    for path in (ROOT / "job").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and ENV_NAME.match(node.value):
                names.add(node.value)
            elif isinstance(node, ast.Name):
                identifiers.add(node.id)  # `__all__ = ["ENV_PREFIX"]` names a constant, not a variable
    return names - identifiers


def _setting_env_names() -> set[str]:
    return {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(Config) if not f.metadata.get("internal")}


def test_every_flag_has_a_row():
    flags = _flags(build_parser())
    flags -= {f for f in flags if f.startswith("--no-") and f"--{f[5:]}" in flags}  # --no-augment: --augment's row
    missing = sorted(f for f in flags if f not in DOC)
    assert not missing, f"docs/threat-model.md has no row for {missing}"


def test_every_environment_variable_the_code_reads_has_a_row():
    candidates = _env_names() - _setting_env_names()
    read = {
        n
        for n in candidates
        if re.search(rf"(env|environ|getenv)\W[^\n]*\b{n}\b|\b{n}\b[^\n]*\b(env|environ)", _SOURCE)
    }
    missing = sorted(n for n in read if n not in DOC)
    assert not missing, f"docs/threat-model.md has no row for the environment variables {missing}"


def test_the_scan_finds_what_it_must():  # the two scans above cannot pass by finding nothing
    assert {"--batch-size", "--public-key", "--s3-endpoint"} <= _flags(build_parser())
    assert {"TF_CONFIG", "CLUSTER_WORKERS", "GITHUB_STEP_SUMMARY", "AIP_MODEL_DIR", "SM_HOSTS"} <= _env_names()


_SOURCE = "\n".join(p.read_text() for p in (ROOT / "job").rglob("*.py"))

"""Reports where CI reviewers look, written by the job itself when the CI system's own variables say it runs there
(stdout stays JSON events only):

- GitHub Actions (`GITHUB_ACTIONS=true`): a Markdown summary appended to `GITHUB_STEP_SUMMARY`; a failure also as
  an `::error title=<kind> error::<message>` workflow command (on stderr, which the runner reads as well).
- GitLab CI (`GITLAB_CI`): `metrics.txt` in OpenMetrics text format (in `CI_PROJECT_DIR`, else the working
  directory), for `artifacts:reports:metrics`, so a merge request shows each value against the target branch.
"""

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from job.storage.pointer import json_number


def _github(env: Mapping[str, str]) -> bool:
    return env.get("GITHUB_ACTIONS") == "true"


def _escape(text: str, property_value: bool = False) -> str:
    """GitHub's workflow-command escaping (actions/toolkit: escapeData / escapeProperty)."""
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if property_value else text


def _pct(value) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, (int, float)) else "-"


def summary_markdown(summary: dict) -> str:
    rows = [
        ("Keras test accuracy", _pct(summary.get("test_accuracy"))),
        ("ONNX Runtime test accuracy", _pct(summary.get("onnx_test_accuracy"))),
        ("ONNX / SavedModel parity (max abs diff)", f"{summary.get('parity_max_abs_diff', 0):.1e}"),
    ]
    int8 = summary.get("int8")
    if int8:
        state = "published" if int8.get("published") else "not published"
        rows.append(
            (
                "INT8 test accuracy",
                f"{_pct(int8.get('test_accuracy'))} ({state}, drop {_pct(int8.get('accuracy_drop'))})",
            )
        )
    base = summary.get("baseline")
    if base:
        rows.append(
            (
                "Against the baseline",
                f"{100 * base['delta']:+.2f} points vs {_pct(base['test_accuracy'])} "
                f"(`{base['uri']}`, allowed drop {_pct(base['max_regression'])})",
            )
        )
    rows.append(("Published to", f"`{summary.get('uri', '-')}`"))
    stages = ", ".join(
        f"{k} {v:.0f} s" for k, v in (summary.get("durations_s") or {}).items() if isinstance(v, (int, float))
    )
    rows.append(("Stages", stages or "-"))
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return f"### CIFAR-10 run `{summary.get('run_id')}`\n\n| | |\n|---|---|\n{table}\n"


def openmetrics(summary: dict) -> str:
    values = {
        "test_accuracy": summary.get("test_accuracy"),
        "onnx_test_accuracy": summary.get("onnx_test_accuracy"),
        "parity_max_abs_diff": summary.get("parity_max_abs_diff"),
        "int8_test_accuracy": (summary.get("int8") or {}).get("test_accuracy"),
        "baseline_delta": (summary.get("baseline") or {}).get("delta"),
        "train_seconds": (summary.get("durations_s") or {}).get("train"),
    }
    lines = []
    for name, value in values.items():
        if json_number(value) is not None:
            lines += [f"# TYPE cifar10_{name} gauge", f"cifar10_{name} {float(value)!r}"]
    return "\n".join([*lines, "# EOF"]) + "\n"


def report_success(summary: dict, env: Mapping[str, str] | None = None) -> None:
    env = os.environ if env is None else env
    if _github(env) and env.get("GITHUB_STEP_SUMMARY"):
        with open(env["GITHUB_STEP_SUMMARY"], "a", encoding="utf-8") as fh:
            fh.write(summary_markdown(summary) + "\n")
    if env.get("GITLAB_CI"):
        (Path(env.get("CI_PROJECT_DIR") or ".") / "metrics.txt").write_text(openmetrics(summary))


def report_failure(kind: str, message: str, env: Mapping[str, str] | None = None) -> None:
    env = os.environ if env is None else env
    if not _github(env):
        return
    print(f"::error title={_escape(kind + ' error', True)}::{_escape(message)}", file=sys.stderr, flush=True)
    if env.get("GITHUB_STEP_SUMMARY"):
        with open(env["GITHUB_STEP_SUMMARY"], "a", encoding="utf-8") as fh:
            fh.write(f"### CIFAR-10 run failed: {kind} error\n\n{message}\n\n")

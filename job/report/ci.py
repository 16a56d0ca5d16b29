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

from job.gates.text import markdown_cell, shown
from job.report.outputs import output_failed, probe_append_file, probe_replace_file, write_text
from job.storage.layout import json_number

MESSAGE_LIMIT = 2000  # characters of a failure message in a workflow command or a summary


def _github(env: Mapping[str, str]) -> bool:
    return env.get("GITHUB_ACTIONS") == "true"


def _escape(text: str, property_value: bool = False) -> str:
    """GitHub's workflow-command escaping (actions/toolkit, command.ts: escapeData / escapeProperty): `%`, CR and LF
    as %25, %0D, %0A, and in a property also `:` and `,`. The text first passes the text gate (`shown`: other
    controls, Unicode line and format characters escaped, `::` broken, length bounded), so nothing in it can end
    the command's line or start another command."""
    text = shown(text, MESSAGE_LIMIT).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if property_value else text


def _summary_file(env: Mapping[str, str]) -> str | None:
    return env.get("GITHUB_STEP_SUMMARY") if _github(env) else None


def _metrics_file(env: Mapping[str, str]) -> Path | None:
    return Path(env.get("CI_PROJECT_DIR") or ".") / "metrics.txt" if env.get("GITLAB_CI") else None


def probe(env: Mapping[str, str] | None = None) -> dict:
    """Before any data is read (and in `--dry-run`): the report files this run will write can be written (exit 4
    naming the variable otherwise). Returns where they are, for the plan."""
    env = os.environ if env is None else env
    summary, metrics = _summary_file(env), _metrics_file(env)
    if summary:
        probe_append_file(summary, "GITHUB_STEP_SUMMARY")
    if metrics:
        probe_replace_file(metrics, "GitLab metrics.txt (CI_PROJECT_DIR)")
    return {"github_step_summary": summary, "gitlab_metrics": str(metrics) if metrics else None}


def _pct(value) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, (int, float)) else "-"


def _sci(value) -> str:
    return f"{value:.1e}" if json_number(value) is not None else "-"


def summary_markdown(summary: dict) -> str:
    rows = [
        ("Keras test accuracy", _pct(summary.get("test_accuracy"))),
        ("ONNX Runtime test accuracy", _pct(summary.get("onnx_test_accuracy"))),
        ("ONNX / SavedModel parity (max abs diff)", _sci(summary.get("parity_max_abs_diff"))),
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
                f"({markdown_cell(base['uri'])}, allowed drop {_pct(base['max_regression'])})",
            )
        )
    rows.append(("Published to", markdown_cell(summary.get("uri", "-"))))
    stages = ", ".join(
        f"{k} {v:.0f} s" for k, v in (summary.get("durations_s") or {}).items() if isinstance(v, (int, float))
    )
    rows.append(("Stages", stages or "-"))
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return f"### CIFAR-10 run `{markdown_cell(summary.get('run_id'))}`\n\n| | |\n|---|---|\n{table}\n"


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
    """After publishing: never raises, never blocks for long (job.report.outputs); a failure is a warning and an
    `output_failed` event."""
    env = os.environ if env is None else env
    try:
        summary_file, metrics_file = _summary_file(env), _metrics_file(env)
        if summary_file:
            write_text(summary_file, summary_markdown(summary) + "\n", "GITHUB_STEP_SUMMARY", append=True)
        if metrics_file:
            write_text(metrics_file, openmetrics(summary), "GitLab metrics.txt", append=False)
    except Exception as exc:  # a summary with fields of unexpected types: still only a report
        output_failed("CI report", shown(str(exc) or type(exc).__name__, 200))


def report_failure(kind: str, message: str, env: Mapping[str, str] | None = None) -> None:
    """A failed run's `::error` workflow command and summary section; never raises, never blocks for long."""
    env = os.environ if env is None else env
    if not _github(env):
        return
    try:
        print(f"::error title={_escape(kind + ' error', True)}::{_escape(message)}", file=sys.stderr, flush=True)
    except (OSError, ValueError):  # stderr closed or gone: nothing to tell
        pass
    summary_file = _summary_file(env)
    if summary_file:
        section = f"### CIFAR-10 run failed: {markdown_cell(kind)} error\n\n{markdown_cell(message, MESSAGE_LIMIT)}\n\n"
        write_text(summary_file, section, "GITHUB_STEP_SUMMARY", append=True)

"""How a run ends: the errors that stop it, the two signals, and the one table of exit codes.

Every failure a user can act on is raised as a `JobError`; the CLI prints one line
`error: <kind> error: <message>` and exits with its code. Nothing is published when one is raised.
SIGTERM and SIGINT are not errors: `Preempted`, `Terminated` and `KeyboardInterrupt` derive from
`BaseException`, so no `except Exception` anywhere can swallow them.

`EXIT_CODES` is the only list of codes: `--help` prints it, and a test checks the README against it.
"""


class JobError(Exception):
    """Base class: an error with a distinct process exit code."""

    exit_code = 1
    kind = "internal"


class ConfigError(JobError):
    exit_code = 2
    kind = "config"


class DataError(JobError):
    exit_code = 3
    kind = "data"


class StorageError(JobError):
    exit_code = 4
    kind = "storage"


class ParityError(JobError):
    exit_code = 5
    kind = "parity"


class QualityGateError(JobError):
    exit_code = 6
    kind = "quality"


class CheckpointError(JobError):
    exit_code = 7
    kind = "checkpoint"


class ModelError(JobError):
    """`job predict`: the model is missing, is not ONNX, or breaks the model contract."""

    exit_code = 8
    kind = "model"


EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_PREEMPTED = 143  # 128 + SIGTERM


class Preempted(BaseException):
    """SIGTERM during training: the step finished and a checkpoint was saved (with --checkpoint-dir)."""


class Terminated(BaseException):
    """SIGTERM at any other stage: stop, clean up, publish nothing."""


# code -> (meaning, what to do). The README's exit-code table must match it (tests/unit/test_errors.py).
EXIT_CODES: dict[int, tuple[str, str]] = {
    EXIT_OK: ("success: the run was published", ""),
    EXIT_INTERNAL: ("internal error (a bug)", "report the traceback"),
    ConfigError.exit_code: (
        "usage or configuration error (flag, `JOB_*` variable, hyperparameter, TF_CONFIG)",
        "fix the named input",
    ),
    DataError.exit_code: (
        "data error: missing, unreadable, malformed or unsafe data or input images",
        "fix the named file",
    ),
    StorageError.exit_code: (
        "storage error: the store cannot be written or read; checked before any data is loaded",
        "fix the endpoint/bucket/credentials named",
    ),
    ParityError.exit_code: (
        "verification failed: an export does not predict what Keras predicts",
        "report it: nothing was published",
    ),
    QualityGateError.exit_code: (
        "quality gate failed: test accuracy below `--min-accuracy`",
        "train longer or lower the gate",
    ),
    CheckpointError.exit_code: (
        "checkpoint error: corrupt or mismatched checkpoint",
        "delete it or use another `--run-id`",
    ),
    ModelError.exit_code: (
        "model error (`job predict`): the model is missing, not ONNX, or breaks the contract",
        "pass a run folder, store or `model.onnx` made by this job",
    ),
    EXIT_INTERRUPTED: ("interrupted (Ctrl-C): nothing was published", ""),
    EXIT_PREEMPTED: (
        "preempted (SIGTERM): in training, a checkpoint is saved (with `--checkpoint-dir`); "
        "elsewhere the run stops; nothing is published",
        "run again with the same `--run-id` and `--checkpoint-dir`",
    ),
}

# Retrying cannot fix these: platforms should fail the job at once (Kubernetes podFailurePolicy, AWS Batch).
PERMANENT_EXIT_CODES = (
    ConfigError.exit_code,
    DataError.exit_code,
    ParityError.exit_code,
    QualityGateError.exit_code,
    CheckpointError.exit_code,
)
# A retry can succeed: a preempted attempt resumes; a storage outage may pass.
RETRYABLE_EXIT_CODES = (StorageError.exit_code, EXIT_PREEMPTED)


def exit_code_of(exc: BaseException) -> int:
    """The process exit code that ending with `exc` means."""
    if isinstance(exc, JobError):
        return exc.exit_code
    if isinstance(exc, (Preempted, Terminated)):
        return EXIT_PREEMPTED
    return EXIT_INTERRUPTED if isinstance(exc, KeyboardInterrupt) else EXIT_INTERNAL


def exit_codes_help() -> str:
    """The `--help` epilogue, generated from EXIT_CODES."""
    lines = ["exit codes:"]
    for code, (meaning, todo) in EXIT_CODES.items():
        text = meaning.replace("`", "") + (f"; {todo.replace('`', '')}" if todo else "")
        lines.append(f"  {code:<4} {text}")
    return "\n".join(lines) + "\n"

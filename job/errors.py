"""Errors that end a run, each with its documented exit code (see README, "Exit codes").

Every failure the user can act on is raised as one of these; the CLI prints a single line
`error: <message>` and exits with `exit_code`. Nothing is published when one is raised.
"""


class JobError(Exception):
    """Base class: an error with a distinct process exit code."""

    exit_code = 1
    kind = "internal"


class ConfigError(JobError):
    """Bad flag, environment variable, hyperparameter or preset."""

    exit_code = 2
    kind = "config"


class DataError(JobError):
    """Missing, unreadable, malformed or unsafe training data."""

    exit_code = 3
    kind = "data"


class StorageError(JobError):
    """The artifact store (local folder or S3) cannot be written or read."""

    exit_code = 4
    kind = "storage"


class ParityError(JobError):
    """The exported models do not predict what the Keras model predicts."""

    exit_code = 5
    kind = "parity"


class QualityGateError(JobError):
    """The model trained, but its test accuracy is below --min-accuracy."""

    exit_code = 6
    kind = "quality"


class CheckpointError(JobError):
    """A checkpoint exists but is corrupt or belongs to another configuration."""

    exit_code = 7
    kind = "checkpoint"


class Terminated(Exception):
    """SIGTERM outside the training loop (during export or publishing): clean up, publish nothing, exit 143."""


# Not errors, but documented exit codes of the job as well.
EXIT_OK = 0
EXIT_INTERRUPTED = 130  # Ctrl-C
EXIT_PREEMPTED = 143  # SIGTERM: checkpoint saved, restart with the same --run-id to resume

"""The job's log lines on stderr: `HH:MM:SS LEVEL message`, every one passed through job.runtime.redact, and the
libraries that chatter held to warnings."""

import logging
import os
import sys

from job.runtime.redact import redact


class _Redacting(logging.Formatter):
    """Every log line passes job.runtime.redact: no URI password or token reaches stderr."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S"
    )
    for handler in logging.getLogger().handlers:
        handler.setFormatter(_Redacting("%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S"))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # silence TensorFlow's C++ banner
    for noisy in ("tensorflow", "absl", "tf2onnx", "botocore", "boto3", "urllib3", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

"""The job's log lines on stderr: `HH:MM:SS LEVEL message`, every one passed through job.runtime.redact and the
text gate (job.gates.text), and the libraries that chatter held to warnings."""

import logging
import os
import sys

from job.gates.text import printable, shown
from job.runtime.redact import redact

LOG_LINE_LIMIT = 4000  # characters of one message (the resolved config line is the longest, about 1500)


class _Redacting(logging.Formatter):
    """Every log line passes job.runtime.redact (no URI password or token reaches stderr) and the text gate: a
    message is one line whatever names it carries (a file name with a line break cannot forge an `error:` line,
    a workflow command or a terminal escape); a traceback keeps its lines, each one escaped."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return shown(redact(super().formatMessage(record)), LOG_LINE_LIMIT)

    def formatException(self, ei) -> str:
        return printable(redact(super().formatException(ei)))

    def formatStack(self, stack_info: str) -> str:
        return printable(redact(super().formatStack(stack_info)))

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

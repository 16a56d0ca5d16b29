"""The one config object of a run, and how it is resolved.

Every field has a default. Layers override them in this order, each later one winning:

    defaults < preset < --config FILE < platform (SageMaker / Vertex AI / AWS Batch conventions)
             < SageMaker hyperparameters < environment (JOB_<FIELD>, MLFLOW_TRACKING_URI) < command-line flags

The resolved config, with the layer that set each field, is logged and saved as `config.json`
next to the artifacts. This module imports no TensorFlow: `--help` and config errors stay instant.
"""

from job.config.flags import PUBLISH_FLAGS, PUBLISH_SETTINGS, add_publish_parser, add_train_parser
from job.config.layers import env_layer, file_layer, hyperparameter_layer, parse_value
from job.config.resolve import resolve, resolve_settings, validate
from job.config.settings import ENV_PREFIX, FIELD_NAMES, RUN_ID_PATTERN, TYPES, Config, settable_fields

__all__ = [
    "ENV_PREFIX",
    "FIELD_NAMES",
    "PUBLISH_FLAGS",
    "PUBLISH_SETTINGS",
    "RUN_ID_PATTERN",
    "TYPES",
    "Config",
    "add_publish_parser",
    "add_train_parser",
    "env_layer",
    "file_layer",
    "hyperparameter_layer",
    "parse_value",
    "resolve",
    "resolve_settings",
    "settable_fields",
    "validate",
]

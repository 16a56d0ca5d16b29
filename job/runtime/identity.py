"""A run's identity across a platform's retries. A retried attempt must get the same run id, or it never finds
the checkpoint its predecessor wrote. Each platform keeps one value across attempts:

- SageMaker: TRAINING_JOB_NAME, the CreateTrainingJob name (spot interruptions restart the same job)
  https://docs.aws.amazon.com/sagemaker/latest/dg/your-algorithms-training-algo-running-container.html
- Vertex AI: CLOUD_ML_JOB_ID, the CustomJob's id, which Vertex sets in every replica: what Google's aiplatform SDK
  reads as the training job's name (googleapis/python-aiplatform,
  google/cloud/aiplatform/training_utils/environment_variables.py: `cloud_ml_job_id`)
- AWS Batch: AWS_BATCH_JOB_ID; an array child's is `<parent id>:<index>`; AWS_BATCH_JOB_ATTEMPT counts
  attempts from 1 https://docs.aws.amazon.com/batch/latest/userguide/job_env_vars.html
- Kubernetes Job: the Job's name, which infra/k8s/job.yaml passes as JOB_RUN_ID from the
  `batch.kubernetes.io/job-name` label (https://kubernetes.io/docs/reference/labels-annotations-taints/)

`--run-id` (or JOB_RUN_ID) still wins over all of these.
"""

import re
from collections.abc import Mapping

ID_SOURCES = ("TRAINING_JOB_NAME", "CLOUD_ML_JOB_ID", "AWS_BATCH_JOB_ID")
ATTEMPT_SOURCES = ("AWS_BATCH_JOB_ATTEMPT",)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def as_run_id(value: str) -> str:
    """A valid folder name and S3 key: `abc:3` -> `abc-3`; at most 128 characters, starting with a letter/digit."""
    safe = _UNSAFE.sub("-", value).strip("-._")[:128]
    return safe or "run"


def platform_run_id(env: Mapping[str, str]) -> tuple[str, str] | None:
    """(run id, the variable it came from), or None where the platform keeps nothing across attempts."""
    for name in ID_SOURCES:
        if env.get(name):
            return as_run_id(env[name]), name
    return None


def attempt(env: Mapping[str, str]) -> int | None:
    for name in ATTEMPT_SOURCES:
        if (env.get(name) or "").isdigit():
            return int(env[name])
    return None

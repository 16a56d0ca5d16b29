"""provenance.json: SLSA v1 build provenance of a run, as an in-toto Statement v1
(https://slsa.dev/spec/v1.0/provenance, https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md).

- subject: every file of the run with its sha256, the same digests manifest.json lists (all files but
  provenance.json itself, model.sig and manifest.json, which are written after it);
- buildDefinition: the resolved config (redacted, as config.json) as external parameters; the platform as an
  internal one; resolvedDependencies: the training data (URI + sha256, the test-split fingerprint as an
  annotation), the lock file, the source revision and the container image, each where known;
- runDetails: the builder (the platform that ran the job) and the invocation (its job: SageMaker training job,
  Vertex AI CustomJob, AWS Batch job, Kubernetes pod, GitHub Actions or GitLab CI run), with start and finish.

The file is part of the signed content: with --sign-key, model.sig covers it.
"""

import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from job.config.parts import RunRecord
from job.errors import DataError, StorageError
from job.runtime.redact import redact, redact_value
from job.runtime.telemetry import versions
from job.storage.files import sha256_file
from job.storage.layout import PROVENANCE, read_metrics
from job.storage.manifest import run_files
from job.storage.pointer import utc_now
from job.storage.runs import run_folder
from job.storage.signing import UNSIGNED

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "urn:cifar10-job:train:v1"
ROOT = Path(__file__).resolve().parents[2]
IMAGE_ENV = "CIFAR10_JOB_IMAGE"  # set by the image's runner where known: registry/name@sha256:...


def subjects(run_dir: Path) -> list[dict]:
    """Every file of the run but provenance.json, model.sig and manifest.json, with its sha256."""
    skip = {PROVENANCE, *UNSIGNED}
    return [
        {"name": rel.as_posix(), "digest": {"sha256": sha256_file(run_dir / rel)}}
        for rel in run_files(run_dir)
        if rel.as_posix() not in skip
    ]


def _full_revision(env: Mapping[str, str]) -> str:
    if env.get("CIFAR10_JOB_REVISION") and env["CIFAR10_JOB_REVISION"] != "unknown":
        return env["CIFAR10_JOB_REVISION"]
    try:
        proc = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=ROOT)
    except (OSError, subprocess.SubprocessError):
        return ""
    return proc.stdout.strip() if proc.returncode == 0 else ""


def dependencies(data_info: dict, env: Mapping[str, str]) -> list[dict]:
    deps = []
    source, digest = str(data_info.get("source", "")), str(data_info.get("source_sha256", ""))
    data = {"name": "training-data", "uri": redact(source)}
    if len(digest) == 64:
        data["digest"] = {"sha256": digest}
    elif digest:
        data["annotations"] = {"source_id": digest}
    if data_info.get("test_fingerprint"):
        data.setdefault("annotations", {})["test_fingerprint"] = data_info["test_fingerprint"]
    deps.append(data)
    lock = ROOT / "requirements.lock"
    if lock.is_file():
        deps.append({"name": "requirements.lock", "uri": "requirements.lock", "digest": {"sha256": sha256_file(lock)}})
    revision = _full_revision(env)
    if revision:
        deps.append({"name": "source", "uri": "cifar10-job", "digest": {"gitCommit": revision}})
    image = env.get(IMAGE_ENV, "")
    if "@sha256:" in image:
        name, _, digest = image.partition("@sha256:")
        deps.append({"name": "image", "uri": f"oci://{redact(name)}", "digest": {"sha256": digest}})
    return deps


def builder_and_invocation(platform_name: str, env: Mapping[str, str], run_id: str) -> tuple[str, str]:
    """(runDetails.builder.id, runDetails.metadata.invocationId) for where the job ran."""
    if env.get("GITHUB_ACTIONS") == "true" and env.get("GITHUB_RUN_ID"):
        server, repo = env.get("GITHUB_SERVER_URL", "https://github.com"), env.get("GITHUB_REPOSITORY", "")
        builder = f"{server}/{env['GITHUB_WORKFLOW_REF']}" if env.get("GITHUB_WORKFLOW_REF") else f"{server}/{repo}"
        run = f"{server}/{repo}/actions/runs/{env['GITHUB_RUN_ID']}/attempts/{env.get('GITHUB_RUN_ATTEMPT', '1')}"
        return builder, run
    if env.get("GITLAB_CI") and env.get("CI_JOB_URL"):
        return env.get("CI_PROJECT_URL", env.get("CI_SERVER_URL", "https://gitlab.com")), env["CI_JOB_URL"]
    if platform_name == "sagemaker":
        job = env.get("TRAINING_JOB_ARN") or env.get("TRAINING_JOB_NAME") or run_id
        return "https://aws.amazon.com/sagemaker/training-jobs", job
    if platform_name == "vertex":
        job = env.get("CLOUD_ML_JOB_ID", run_id)
        project = env.get("CLOUD_ML_PROJECT_ID")
        return (
            "https://cloud.google.com/vertex-ai/custom-jobs",
            f"projects/{project}/customJobs/{job}" if project else job,
        )
    if platform_name == "aws-batch" or env.get("AWS_BATCH_JOB_ID"):
        job = env.get("AWS_BATCH_JOB_ID", run_id)
        attempt = env.get("AWS_BATCH_JOB_ATTEMPT")
        return "https://aws.amazon.com/batch", f"{job}/attempt/{attempt}" if attempt else job
    if env.get("KUBERNETES_SERVICE_HOST"):
        namespace = env.get("POD_NAMESPACE", "")
        ns_file = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        if not namespace and ns_file.is_file():
            namespace = ns_file.read_text().strip()
        pod = env.get("POD_NAME") or env.get("HOSTNAME", "")
        return f"https://kubernetes.io/{platform_name}", f"namespaces/{namespace or 'default'}/pods/{pod}"
    return f"urn:cifar10-job:{platform_name}", run_id


def provenance(
    run_dir: Path, record: RunRecord, platform, data_info: dict, env: Mapping[str, str] | None = None
) -> dict:
    env = os.environ if env is None else env
    config = record.params  # redacted by Config.to_dict
    builder, invocation = builder_and_invocation(platform.name, env, record.run_id)
    produced = versions()
    try:
        metrics = read_metrics(run_folder(run_dir)) or {}
    except (DataError, StorageError):
        metrics = {}
    started = (metrics.get("training") or {}).get("started_at")
    return {
        "_type": STATEMENT_TYPE,
        "subject": subjects(run_dir),
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {"config": config},
                "internalParameters": {"platform": platform.name, "attempt": platform.attempt},
                "resolvedDependencies": dependencies(data_info, env),
            },
            "runDetails": {
                "builder": {
                    "id": redact_value(builder),
                    "version": {k: v for k, v in produced.items() if isinstance(v, str)},
                },
                "metadata": {
                    "invocationId": redact_value(invocation),
                    **({"startedOn": started} if isinstance(started, str) else {}),
                    "finishedOn": utc_now(),
                },
            },
        },
    }


def write_provenance(run_dir: Path, record: RunRecord, platform, data_info: dict) -> dict:
    statement = provenance(run_dir, record, platform, data_info)
    (run_dir / PROVENANCE).write_text(json.dumps(statement, indent=2) + "\n")
    return statement

"""No secret is ever printed or published: a canary password planted in every place a user can pass a URI (the
S3 endpoint as a flag, a JOB_* variable and boto3's own variable, the MLflow tracking URI), through a real run
against the real S3 and MLflow test servers, is found in no output stream, no published object, no MLflow
param, tag or artifact, and no checkpoint."""

import json
from concurrent.futures import ThreadPoolExecutor

from forked import run_forked

from helpers import ROOT, job_env, run_job, train_args

CANARY = "c4nary-pa55word-7e1d"


def _with_password(uri: str) -> str:
    return uri.replace("http://", f"http://user:{CANARY}@")


def _everything_in_the_bucket(bucket: str) -> bytes:
    from job.storage.s3client import make_client

    client = make_client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert any(k.endswith("/manifest.json") for k in keys), keys
    return b"".join(client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys)


def _everything_in_mlflow(uri: str, run_id: str) -> str:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    texts = [json.dumps(run.data.params), json.dumps(run.data.tags), json.dumps(dict(run.info))]
    for artifact in client.list_artifacts(run_id, "run"):
        if not artifact.is_dir:
            texts.append(open(client.download_artifacts(run_id, artifact.path), errors="replace").read())
    return "\n".join(texts)


def _experiment(uri: str, name: str = "cifar10-job") -> None:
    """The jobs' experiment, made before they start at once: two jobs creating it together on a fresh server race
    (RESOURCE_ALREADY_EXISTS), and the loser's tracking ends with a warning."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    if client.get_experiment_by_name(name) is None:
        client.create_experiment(name)


def test_a_canary_password_in_every_uri_reaches_no_output_and_no_published_file(
    tiny_tar, bucket, s3_env, s3_endpoint, mlflow_server, tmp_path
):
    variants = [
        ({"s3_endpoint": _with_password(s3_endpoint), "mlflow": _with_password(mlflow_server)}, {}),
        ({}, {"JOB_S3_ENDPOINT": _with_password(s3_endpoint), "MLFLOW_TRACKING_URI": _with_password(mlflow_server)}),
        ({}, {"AWS_ENDPOINT_URL": _with_password(s3_endpoint), "JOB_MLFLOW": _with_password(mlflow_server)}),
    ]
    _experiment(mlflow_server)
    runs = []
    with ThreadPoolExecutor(max_workers=len(variants)) as pool:
        for i, (flags, env) in enumerate(variants):  # the three trainings at once; the read-only checks meanwhile
            args = train_args(tiny_tar, f"s3://{bucket}/v{i}", run_id=f"canary-{i}", cache=tmp_path / "cache", **flags)
            args += ["--checkpoint-dir", str(tmp_path / f"ckpt{i}")]
            runs.append((i, args, env, pool.submit(run_job, *args, env={**s3_env, **env})))
        for _, args, env, _ in runs:
            for extra in (["--print-config"], ["--dry-run"]):  # read-only: a forked child (tests/forked.py)
                shown, _ = run_forked([*args, *extra], env=job_env(**{**s3_env, **env}), cwd=ROOT)
                assert shown.returncode == 0 and CANARY not in shown.stdout + shown.stderr, shown.stderr[-2000:]
                assert "user:***@" in shown.stdout, shown.stdout
    for i, _, _, trained in runs:
        proc = trained.result()
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert CANARY not in proc.stdout and CANARY not in proc.stderr
        done = json.loads(proc.stdout.splitlines()[-1])
        assert CANARY.encode() not in _everything_in_the_bucket(bucket)
        assert CANARY not in _everything_in_mlflow(mlflow_server, done["mlflow"]["mlflow_run_id"])
        for f in (tmp_path / f"ckpt{i}").rglob("*"):
            assert not f.is_file() or CANARY.encode() not in f.read_bytes(), f
    assert job_env()  # the helper's environment carries no canary of its own
    print(f"canary {CANARY!r}: absent from stdout, stderr, {len(variants)} runs' objects, MLflow and checkpoints")

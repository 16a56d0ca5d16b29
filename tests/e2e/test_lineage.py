"""Lineage in MLflow, against a real `mlflow server` (as in test_mlflow.py): a signed run that passed its gates is
tracked with its data as MLflow 3 dataset inputs (digests: the data's sha256, the test split's fingerprint), the
signing key's fingerprint as a tag, and its registered version gets the alias `champion`; a run refused by its
quality gate leaves the alias where it was."""

import hashlib
import json
import sys

import pytest

from helpers import run_job, train_args

MODEL = "cifar10-lineage"


@pytest.fixture(scope="module")
def key(tmp_path_factory):
    from cryptography.hazmat.primitives import serialization as s
    from cryptography.hazmat.primitives.asymmetric import ec

    d = tmp_path_factory.mktemp("lineage-key")
    k = ec.generate_private_key(ec.SECP256R1())
    (d / "k.pem").write_bytes(k.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption()))
    pub = k.public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo)
    return d / "k.pem", hashlib.sha256(pub).hexdigest()


@pytest.fixture(scope="module")
def tracked(mlflow_server, tiny_tar, key, tmp_path_factory):
    base = tmp_path_factory.mktemp("lineage")
    env = {"MLFLOW_TRACKING_URI": mlflow_server, "JOB_MLFLOW_MODEL_NAME": MODEL}
    passed = run_job(
        *train_args(tiny_tar, base / "store", run_id="pass-1", cache=base / "cache", min_accuracy=0.01),
        "--sign-key",
        str(key[0]),
        env=env,
    )
    assert passed.returncode == 0, passed.stderr[-3000:]
    refused = run_job(
        *train_args(tiny_tar, base / "store", run_id="refused-1", cache=base / "cache", min_accuracy=0.999),
        env=env,
    )
    assert refused.returncode == 6, refused.stderr[-3000:]
    return {
        "uri": mlflow_server,
        "run": base / "store" / "pass-1",
        "done": json.loads(passed.stdout.splitlines()[-1]),
        "data": tiny_tar,
    }


def test_the_dataset_is_an_mlflow_input_with_its_digest_and_the_key_a_tag(tracked, key):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracked["uri"])
    run = client.get_run(tracked["done"]["mlflow"]["mlflow_run_id"])
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    print({n: (d.dataset.digest, d.dataset.source_type, [t.value for t in d.tags]) for n, d in inputs.items()})
    data_sha = hashlib.sha256(tracked["data"].read_bytes()).hexdigest()
    metrics = json.loads((tracked["run"] / "metrics.json").read_text())
    fingerprint = metrics["data"]["test_fingerprint"]
    train = inputs["training-data"]
    assert data_sha.startswith(train.dataset.digest) and len(train.dataset.digest) == 36
    assert json.loads(train.dataset.profile)["sha256"] == data_sha
    assert {t.key: t.value for t in train.tags}["mlflow.data.context"] == "training"
    test = inputs["test-split"]
    assert (
        fingerprint.startswith(test.dataset.digest)
        and json.loads(test.dataset.profile)["test_fingerprint"] == fingerprint
    )
    assert run.data.tags["cifar10_job.signing_key_sha256"] == key[1]


def test_only_the_run_that_passed_its_gates_is_the_champion(tracked):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracked["uri"])
    assert tracked["done"]["mlflow"]["registered_model"] == {"name": MODEL, "version": "1", "alias": "champion"}
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.version == "1" and champion.run_id == tracked["done"]["mlflow"]["mlflow_run_id"]
    versions = client.search_model_versions(f"name='{MODEL}'")
    print(sys.version, [(v.version, v.aliases) for v in versions])
    assert all(v.version == "1" or "champion" not in v.aliases for v in versions)

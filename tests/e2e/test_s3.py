"""S3 publishing, fail-fast checks, faults and S3 data input, against a real S3 server over HTTP."""

import functools
import json
import subprocess
import time
from pathlib import Path

import pytest

from helpers import ROOT, job_env, make_image_tree, make_run_dir, make_tar, run_job, run_job_forked, train_args
from job import data
from job.errors import DataError, StorageError
from job.storage import open_store
from job.storage.files import sha256_file
from job.storage.manifest import write_manifest
from job.storage.runs import local_manifest_problems as verify_manifest
from job.storage.s3client import S3Options, make_client
from s3_server import FaultProxy, free_port


def download_run(client, bucket: str, prefix: str, dest: Path) -> Path:
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        for obj in page.get("Contents", []):
            target = dest / obj["Key"][len(prefix) + 1 :]
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, obj["Key"], str(target))
    return dest


def keys(client, bucket, prefix=""):
    return sorted(
        o["Key"]
        for p in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for o in p.get("Contents", [])
    )


# publishes through the fault proxy retry with backoff: a longer guard than the forked runner's default
_job = functools.partial(run_job_forked, timeout=300)


@pytest.fixture(scope="module")
def s3_run(tmp_path_factory, tiny_tar, s3_endpoint):
    """A real training run straight to S3 through the CLI (a unique secret in its environment) whose upload fails
    after the probe (PUTs fail, through a fault proxy): the run is kept under the cache, and `job publish`
    publishes it without training again. One training for the failed-upload test and the published-run tests."""
    import secrets

    from job.storage.s3client import make_client as mk

    base = tmp_path_factory.mktemp("s3run")
    secret = "s3cr3t-" + secrets.token_hex(12)
    env = {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing-key-id",
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    import os

    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        mk().create_bucket(Bucket="runs")
        proxy = FaultProxy(s3_endpoint, fail_after=6, methods={"PUT"})
        try:
            train = run_job(
                *train_args(
                    str(tiny_tar),
                    "s3://runs/team/cifar",
                    run_id="s3-1",
                    cache=str(base / "cache"),
                    epochs=1,
                    s3_endpoint=proxy.endpoint,
                    s3_retries="2",
                ),
                env=env,
            )
        finally:
            proxy.close()
        kept = base / "cache" / "unpublished" / "s3-1"
        before_publish = keys(mk(), "runs")
        kept_problems = verify_manifest(kept) if kept.is_dir() else ["not kept"]
        proc = _job("publish", str(kept), "s3://runs/team/cifar", env=env)
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    return {
        "train": train,
        "kept": kept,
        "kept_problems": kept_problems,
        "keys_before_publish": before_publish,
        "proc": proc,
        "env": env,
        "secret": secret,
        "base": base,
    }


def test_published_run_downloads_intact_against_its_manifest(s3_run, s3_env, tmp_path):
    client = make_client()
    run = download_run(client, "runs", "team/cifar/s3-1", tmp_path / "dl")
    assert verify_manifest(run) == []
    assert (run / "model.onnx").is_file() and (run / "saved_model" / "saved_model.pb").is_file()
    head = client.head_object(Bucket="runs", Key="team/cifar/s3-1/model.onnx")
    assert head["Metadata"]["sha256"] == sha256_file(run / "model.onnx")
    assert client.head_object(Bucket="runs", Key="team/cifar/s3-1/metrics.json")["ContentType"] == "application/json"
    assert client.head_object(Bucket="runs", Key="team/cifar/s3-1/curves.png")["ContentType"] == "image/png"
    latest = json.loads(client.get_object(Bucket="runs", Key="team/cifar/latest.json")["Body"].read())
    assert latest["run_id"] == "s3-1" and latest["uri"] == "s3://runs/team/cifar/s3-1"


def test_summary_line_is_machine_readable(s3_run):
    assert s3_run["proc"].returncode == 0, s3_run["proc"].stderr[-3000:]
    summary = json.loads(s3_run["proc"].stdout.strip().splitlines()[-1])
    assert summary["store"] == "s3://runs/team/cifar" and summary["uri"] == "s3://runs/team/cifar/s3-1"
    assert summary["upload"]["objects"] >= 12 and summary["upload"]["requests"] >= summary["upload"]["objects"]
    assert 0 < summary["upload"]["verify_seconds"] < summary["upload"]["seconds"]  # the read-back, inside the upload
    print("upload:", summary["upload"])
    assert {"test_accuracy", "onnx_test_accuracy", "parity_max_abs_diff", "durations_s"} <= set(summary)


def test_no_secret_in_logs_or_artifacts(s3_run, s3_env, tmp_path):
    secret = s3_run["secret"]
    for proc in (s3_run["train"], s3_run["proc"]):
        assert secret not in proc.stdout and secret not in proc.stderr
    run = download_run(make_client(), "runs", "team/cifar/s3-1", tmp_path / "dl")
    for file in run.rglob("*"):
        if file.is_file():
            assert secret.encode() not in file.read_bytes(), file
    assert "AWS_SECRET" not in (run / "config.json").read_text()


def _local_run(tmp_path, run_id="r1", files=None):
    files = files or {"metrics.json": '{"test_accuracy": 0.5}', "model.onnx": "x" * 1000, "sub/a.txt": "a"}
    return make_run_dir(tmp_path, run_id, run_id=run_id, files=files)


def test_publish_command_uploads_an_existing_run_folder(bucket, s3_env, tmp_path):
    run = _local_run(tmp_path)
    proc = _job("publish", str(run), f"s3://{bucket}/p")
    assert proc.returncode == 0, proc.stderr
    assert keys(make_client(), bucket) == [
        "p/latest.json",
        "p/r1/manifest.json",
        "p/r1/metrics.json",
        "p/r1/model.onnx",
        "p/r1/sub/a.txt",
    ]


def test_same_run_id_again_replaces_the_run_whole(bucket, s3_env, tmp_path):
    store = open_store(f"s3://{bucket}/p")
    store.publish(_local_run(tmp_path / "a", files={"old-only.txt": "old", "metrics.json": "{}"}), "r1", {})
    store.publish(_local_run(tmp_path / "b", files={"new.txt": "new", "metrics.json": "{}"}), "r1", {})
    assert keys(make_client(), bucket, "p/r1/") == ["p/r1/manifest.json", "p/r1/metrics.json", "p/r1/new.txt"]


def test_large_file_goes_multipart(bucket, s3_env, tmp_path):
    run = tmp_path / "big"
    run.mkdir()
    (run / "model.keras").write_bytes(b"\1" * (9 * 1024 * 1024))
    write_manifest(run, "big")
    open_store(f"s3://{bucket}/p").publish(run, "big", {})
    etag = make_client().head_object(Bucket=bucket, Key="p/big/model.keras")["ETag"]
    assert "-" in etag  # multipart ETags are "<md5>-<parts>"


# ---------------------------------------------------------------- fail fast, before any training


def _fail_fast(args, env, tmp_path):
    t0 = time.monotonic()
    proc = _job("train", "--data", "/nonexistent-data", "--cache-dir", str(tmp_path), *args, env=env)
    return proc, time.monotonic() - t0


def test_missing_bucket_fails_fast_with_storage_exit(s3_env, tmp_path):
    proc, _ = _fail_fast(["--out", "s3://no-such-bucket-xyz/p"], s3_env, tmp_path)
    assert proc.returncode == 4
    line = [x for x in proc.stderr.splitlines() if x.startswith("error:")][0]
    assert "no-such-bucket-xyz" in line and s3_env["AWS_ENDPOINT_URL"] in line and "does not exist" in line
    assert "stage data" not in proc.stderr  # nothing loaded, nothing trained


def test_closed_port_fails_fast_with_storage_exit(s3_env, tmp_path):
    endpoint = f"http://127.0.0.1:{free_port()}"
    proc, _ = _fail_fast(["--out", "s3://b/p", "--s3-endpoint", endpoint], s3_env, tmp_path)
    assert proc.returncode == 4 and "unreachable" in proc.stderr and endpoint in proc.stderr


def test_bad_endpoint_url_fails_fast_with_storage_exit(s3_env, tmp_path):
    proc, _ = _fail_fast(["--out", "s3://b/p", "--s3-endpoint", "not a url"], s3_env, tmp_path)
    assert proc.returncode == 4 and "invalid S3 endpoint" in proc.stderr


def test_missing_credentials_fail_fast(s3_env, tmp_path):
    env = {
        **s3_env,
        "AWS_ACCESS_KEY_ID": "",
        "AWS_SECRET_ACCESS_KEY": "",
        "AWS_SHARED_CREDENTIALS_FILE": "/none",
        "AWS_CONFIG_FILE": "/none",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    proc, _ = _fail_fast(["--out", "s3://b/p"], env, tmp_path)
    assert proc.returncode == 4 and "credentials" in proc.stderr


# ---------------------------------------------------------------- injected faults


def test_transient_503s_and_dropped_connections_are_retried(bucket, s3_env, s3_endpoint, tmp_path):
    for faults in ({"fail_first": 3}, {"drop_first": 2}):
        proxy = FaultProxy(s3_endpoint, **faults)
        try:
            run = _local_run(tmp_path / str(len(faults) + proxy.server.server_address[1]))
            store = open_store(f"s3://{bucket}/p", S3Options(endpoint=proxy.endpoint, retries=5))
            store.publish(run, "r1", {})
            summary = {"upload": store.location.last_upload}
            assert proxy.injected == max(faults.values())
            assert summary["upload"]["requests"] > summary["upload"]["objects"]
        finally:
            proxy.close()
        assert "p/r1/manifest.json" in keys(make_client(), bucket)


def test_persistent_write_failure_leaves_no_manifest_cleans_up_and_keeps_latest(bucket, s3_env, s3_endpoint, tmp_path):
    open_store(f"s3://{bucket}/p").publish(_local_run(tmp_path / "good"), "good", {})
    latest_before = make_client().get_object(Bucket=bucket, Key="p/latest.json")["Body"].read()
    proxy = FaultProxy(s3_endpoint, fail_after=3, methods={"PUT"})  # list + first uploads pass, then PUTs fail
    try:
        run = _local_run(tmp_path / "bad", "r2")
        proc = _job(
            "publish",
            str(run),
            f"s3://{bucket}/p",
            "--s3-endpoint",
            proxy.endpoint,
            env={**s3_env, "JOB_S3_RETRIES": "2"},
        )
    finally:
        proxy.close()
    assert proc.returncode == 4 and "no manifest was written" in proc.stderr
    assert keys(make_client(), bucket, "p/r2/") == []  # cleaned up
    assert make_client().get_object(Bucket=bucket, Key="p/latest.json")["Body"].read() == latest_before


def test_total_outage_mid_publish_never_yields_a_manifest(bucket, s3_env, s3_endpoint, tmp_path):
    proxy = FaultProxy(s3_endpoint, fail_after=3)
    try:
        with pytest.raises(StorageError, match="no manifest"):
            open_store(f"s3://{bucket}/p", S3Options(endpoint=proxy.endpoint, retries=2)).publish(
                _local_run(tmp_path), "r3", {}
            )
    finally:
        proxy.close()
    assert not any(k.endswith("manifest.json") for k in keys(make_client(), bucket, "p/r3/"))


# ---------------------------------------------------------------- S3 as a data source


def test_data_from_s3_archive_and_prefix(bucket, s3_env, tmp_path):
    client = make_client()
    tree = make_image_tree(tmp_path / "tree", classes=3, per_class=4)
    tar = make_tar(tree, tmp_path / "d.tar.gz")
    client.upload_file(str(tar), bucket, "datasets/d.tar.gz")
    for file in tree.rglob("*.png"):
        client.upload_file(str(file), bucket, "trees/t1/" + file.relative_to(tree).as_posix())
    local = data.load(str(tar), tmp_path / "c0")
    from_archive = data.load(f"s3://{bucket}/datasets/d.tar.gz", tmp_path / "c1")
    from_prefix = data.load(f"s3://{bucket}/trees/t1", tmp_path / "c2")
    for ds in (from_archive, from_prefix):
        assert ds.class_names == local.class_names and (ds.x_train == local.x_train).all()
    assert from_archive.sha256 == local.sha256  # same bytes after download


def test_data_from_s3_detects_corrupt_download(bucket, s3_env, tmp_path):
    client = make_client()
    client.put_object(Bucket=bucket, Key="d.tar", Body=b"abc", Metadata={"sha256": "0" * 64})
    with pytest.raises(DataError, match="sha256"):
        data.load(f"s3://{bucket}/d.tar", tmp_path)
    with pytest.raises(DataError, match="no such object or prefix"):
        data.load(f"s3://{bucket}/missing", tmp_path)


def test_failed_upload_after_training_keeps_the_run_for_publish(s3_run, s3_env):
    """Train, fail the upload (PUTs fail after the probe), then publish the kept run without re-training (the
    module's one training: s3_run)."""
    proc, kept = s3_run["train"], s3_run["kept"]
    assert proc.returncode == 4, proc.stderr[-2000:]
    line = [x for x in proc.stderr.splitlines() if x.startswith("error:")][0]
    assert kept == s3_run["base"] / "cache" / "unpublished" / "s3-1"
    assert f"python -m job publish {kept} s3://runs/team/cifar" in line
    assert s3_run["kept_problems"] == [] and verify_manifest(kept) == []
    assert not any(k.endswith("manifest.json") for k in s3_run["keys_before_publish"])
    again = s3_run["proc"]
    assert again.returncode == 0, again.stderr
    assert "team/cifar/s3-1/manifest.json" in keys(make_client(), "runs")


# ---------------------------------------------------------------- what arrived: uploads read back, GETs retried


def _error_lines(proc) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def test_a_corrupted_upload_never_leaves_latest_on_a_run_verify_rejects(bucket, s3_env, s3_endpoint, tmp_path):
    """One byte flipped in transit (moto, unlike S3, stores a body whose Content-MD5 does not match): the
    read-back refuses it, nothing of the run stays, latest.json stays on the run that verifies."""
    store = f"s3://{bucket}/p"
    open_store(store).publish(_local_run(tmp_path / "good"), "good", {"finished_at": "2026-01-01T00:00:00Z"})
    latest_before = make_client().get_object(Bucket=bucket, Key="p/latest.json")["Body"].read()
    for faults in ({"corrupt_put": 1, "match": "r2/model.onnx"}, {"corrupt_put": 1, "match": "r2/manifest.json"}):
        proxy = FaultProxy(s3_endpoint, **faults)
        try:
            run = _local_run(tmp_path / faults["match"].replace("/", "-"), "r2")
            proc = _job("publish", str(run), store, "--s3-endpoint", proxy.endpoint, env=s3_env)
        finally:
            proxy.close()
        assert proxy.injected == 1
        assert proc.returncode == 4, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr and len(_error_lines(proc)) == 1, proc.stderr[-2000:]
        assert "did not arrive intact" in _error_lines(proc)[0] and faults["match"] in _error_lines(proc)[0]
        assert keys(make_client(), bucket, "p/r2/") == []
        assert make_client().get_object(Bucket=bucket, Key="p/latest.json")["Body"].read() == latest_before
        verify = _job("runs", "verify", store, "latest", env=s3_env)
        assert verify.returncode == 0, verify.stderr[-2000:]


def test_every_put_carries_content_md5(bucket, s3_env, s3_endpoint, tmp_path):
    """Content-MD5 on every object PUT and every part (what S3, MinIO and Ceph check before storing)."""
    import base64
    import hashlib

    from botocore.awsrequest import AWSPreparedRequest

    run = tmp_path / "big"
    run.mkdir()
    (run / "model.keras").write_bytes(bytes(range(256)) * (36 * 1024 + 7))  # 9 MiB + : two parts
    (run / "metrics.json").write_text("{}")
    write_manifest(run, "big")
    store = open_store(f"s3://{bucket}/p")
    seen: list[tuple[str, bool]] = []

    def check(request: AWSPreparedRequest, **_):
        if request.method == "PUT" and request.body and "latest.json" not in request.url:
            body = request.body if isinstance(request.body, bytes) else request.body.read()
            md5 = base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()
            sent = request.headers.get("Content-MD5")
            sent = sent.decode() if isinstance(sent, bytes) else sent
            seen.append((request.url.split("?")[0].rsplit("/", 1)[-1], sent == md5))
            if hasattr(request.body, "seek"):
                request.body.seek(0)

    store.location.client.meta.events.register("before-send.s3", check)
    store.publish(run, "big", {})
    assert seen and all(ok for _, ok in seen), seen
    assert [name for name, _ in seen].count("model.keras") == 2  # one per part
    assert "-" in make_client().head_object(Bucket=bucket, Key="p/big/model.keras")["ETag"]
    assert store.location.last_upload["verify_seconds"] > 0


def test_a_corrupted_part_of_a_multipart_upload_is_refused(bucket, s3_env, s3_endpoint, tmp_path):
    run = tmp_path / "big"
    run.mkdir()
    (run / "model.keras").write_bytes(b"\1" * (9 * 1024 * 1024))
    write_manifest(run, "big")
    proxy = FaultProxy(s3_endpoint, corrupt_put=1, match="big/model.keras")
    try:
        with pytest.raises(StorageError, match="did not arrive intact"):
            open_store(f"s3://{bucket}/p", S3Options(endpoint=proxy.endpoint, retries=2)).publish(run, "big", {})
    finally:
        proxy.close()
    assert proxy.injected == 1 and keys(make_client(), bucket) == []


def test_a_truncated_get_is_retried_and_succeeds(bucket, s3_env, s3_endpoint, tmp_path):
    store = f"s3://{bucket}/p"
    open_store(store).publish(_local_run(tmp_path / "good"), "good", {})
    for reader in (["runs", "verify", store, "good"], ["runs", "download", store, "good", str(tmp_path / "dl")]):
        proxy = FaultProxy(s3_endpoint, truncate_get=1)  # the first object GET: half its body, then a close
        try:
            proc = _job(*reader, env={**s3_env, "AWS_ENDPOINT_URL": proxy.endpoint})
        finally:
            proxy.close()
        assert proxy.injected == 1
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "cut short" in proc.stderr  # logged, then fetched again
    assert verify_manifest(tmp_path / "dl") == []
    proxy = FaultProxy(s3_endpoint, truncate_get=1, match="r2/")  # the publish's own read-back
    try:
        store_ = open_store(store, S3Options(endpoint=proxy.endpoint, retries=3))
        store_.publish(_local_run(tmp_path / "r2", "r2"), "r2", {})
    finally:
        proxy.close()
    assert proxy.injected == 1 and "p/r2/manifest.json" in keys(make_client(), bucket)


def test_persistent_truncation_is_a_storage_error(bucket, s3_env, s3_endpoint, tmp_path):
    store = f"s3://{bucket}/p"
    open_store(store).publish(_local_run(tmp_path / "good"), "good", {})
    proxy = FaultProxy(s3_endpoint, truncate_get=1000)
    try:
        proc = _job("runs", "verify", store, "good", env={**s3_env, "AWS_ENDPOINT_URL": proxy.endpoint})
    finally:
        proxy.close()
    assert proc.returncode == 4, proc.stderr[-2000:]
    assert len(_error_lines(proc)) == 1 and "cut short on each of 5 attempts" in _error_lines(proc)[0]
    assert proxy.injected == 5  # bounded: the default retry count


# ---------------------------------------------------------------- export-serving and download destinations


def _contract_run(tmp_path) -> Path:
    from helpers import CLASSES, contract_model

    run = tmp_path / "src" / "good"
    run.mkdir(parents=True)
    contract_model(run / "model.onnx", classes=3, class_names=CLASSES[:3])
    (run / "metrics.json").write_text("{}")
    write_manifest(run, "good")
    return run


def test_export_serving_to_s3_writes_a_complete_repository(bucket, s3_env, s3_endpoint, tmp_path):
    store = f"s3://{bucket}/runs"
    open_store(store).publish(_contract_run(tmp_path), "good", {})
    proc = _job("runs", "export-serving", store, "good", f"s3://{bucket}/serving", env=s3_env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    written = keys(make_client(), bucket, "serving/")
    assert any(k.endswith("/config.pbtxt") for k in written) and any(k.endswith("/1/model.onnx") for k in written)
    again = _job("runs", "export-serving", store, "good", f"s3://{bucket}/serving", env=s3_env)
    assert again.returncode == 3 and "holds objects already" in again.stderr  # never mixed with an older export
    proxy = FaultProxy(s3_endpoint, fake_put=1, match="config.pbtxt")  # the last object: all others were written
    try:
        env = {**s3_env, "AWS_ENDPOINT_URL": proxy.endpoint}
        failed = _job("runs", "export-serving", store, "good", f"s3://{bucket}/serving2", env=env)
    finally:
        proxy.close()
    assert failed.returncode == 4 and "were removed" in failed.stderr, failed.stderr[-2000:]
    assert keys(make_client(), bucket, "serving2/") == []


def test_folders_made_by_download_and_export_follow_the_umask(tmp_path):
    """Not mkdtemp's 0700: a downloaded run or a model repository is a folder like any other (umask 022 -> 0755);
    files keep their own modes (0644)."""
    store = tmp_path / "store"
    open_store(str(store)).publish(_contract_run(tmp_path), "good", {})
    code = (
        "import os, sys; os.umask(0o022); from job.cli import main; "
        "sys.exit(main(['runs', sys.argv[1], sys.argv[2], 'good', sys.argv[3]]))"
    )
    import sys

    for command, dest in (("download", tmp_path / "dl"), ("export-serving", tmp_path / "repo")):
        argv = [sys.executable, "-c", code, command, str(store), str(dest)]
        proc = subprocess.run(argv, capture_output=True, text=True, env=job_env(), cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-2000:]
        for path in [dest, *dest.rglob("*")]:
            mode = path.stat().st_mode & 0o777
            assert mode == (0o755 if path.is_dir() else 0o644), (path, oct(mode))

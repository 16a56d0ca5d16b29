"""MLflow tracking against a real `mlflow server` (SQLite backend) on 127.0.0.1: a tiny run is logged, then read
back with MlflowClient, and its registered model is loaded with MLflow and ONNX Runtime."""

import json

import numpy as np
import pytest

from helpers import run_job, train_args


@pytest.fixture(scope="module")
def tracked(mlflow_server, tiny_tar, tmp_path_factory):
    base = tmp_path_factory.mktemp("tracked")
    proc = run_job(
        *train_args(tiny_tar, base / "store", run_id="tracked-1", cache=base / "cache", epochs=2),
        env={"MLFLOW_TRACKING_URI": mlflow_server, "JOB_MLFLOW_MODEL_NAME": "cifar10-tiny"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = json.loads(proc.stdout.splitlines()[-1])
    return {"uri": mlflow_server, "run": base / "store" / "tracked-1", "done": done}


def test_the_mlflow_run_holds_params_epoch_and_test_metrics_and_the_run_folder(tracked):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracked["uri"])
    run = client.get_run(tracked["done"]["mlflow"]["mlflow_run_id"])
    config = json.loads((tracked["run"] / "config.json").read_text())
    metrics = json.loads((tracked["run"] / "metrics.json").read_text())
    print(
        "MLflow run:",
        json.dumps(
            {
                "status": run.info.status,
                "tags": {k: v for k, v in run.data.tags.items() if k.startswith("cifar10_job")},
                "metrics": run.data.metrics,
            },
            indent=1,
        ),
    )
    assert run.info.status == "FINISHED"
    assert run.data.tags["cifar10_job.run_id"] == "tracked-1" and run.data.tags["cifar10_job.preset"] == "seed"
    assert run.data.tags["cifar10_job.revision"]
    assert run.data.params["epochs"] == "2" and run.data.params["batch_size"] == str(config["batch_size"])
    assert run.data.metrics["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert run.data.metrics["onnx_test_accuracy"] == pytest.approx(metrics["onnx_test_accuracy"])
    history = client.get_metric_history(run.info.run_id, "val_accuracy")
    assert [m.step for m in history] == [1, 2]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "run")}
    assert {"run/model.onnx", "run/metrics.json", "run/manifest.json", "run/MODEL_CARD.md"} <= artifacts


def test_the_registered_model_loads_with_mlflow_and_predicts_what_the_run_model_predicts(tracked):
    import mlflow
    import onnxruntime as ort

    mlflow.set_tracking_uri(tracked["uri"])
    registered = tracked["done"]["mlflow"]["registered_model"]
    assert registered == {"name": "cifar10-tiny", "version": "1"}
    x = np.random.default_rng(3).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    expected = ort.InferenceSession(str(tracked["run"] / "model.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"image": x}
    )[0]
    proto = mlflow.onnx.load_model("models:/cifar10-tiny/1")
    got = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    np.testing.assert_array_equal(got, expected)
    pyfunc = mlflow.pyfunc.load_model("models:/cifar10-tiny/1")
    np.testing.assert_allclose(pyfunc.predict({"image": x})["probabilities"], expected, atol=1e-6)
    assert pyfunc.metadata.get_input_schema().inputs[0].name == "image"


def test_an_unreachable_tracking_server_fails_before_training(tiny_tar, tmp_path):
    proc = run_job(
        *train_args(tiny_tar, tmp_path / "store", cache=tmp_path / "cache"),
        env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"},
    )
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 4 and len(errors) == 1 and "MLflow tracking server" in errors[0]
    assert "stage data" not in proc.stderr and list((tmp_path / "store").iterdir()) == []


def test_trials_starting_together_all_track_into_the_experiment_one_of_them_creates(mlflow_server):
    """A sweep's trials start at once against an experiment that does not exist yet: every one of them creates or
    finds it (the losers of the creation race look it up again) and tracks its run there; none runs untracked."""
    import secrets
    import threading

    from mlflow.tracking import MlflowClient

    from job import config
    from job.report.tracking import Tracker

    name = "sweep-" + secrets.token_hex(4)
    trials = 8
    ready, trackers, errors = threading.Barrier(trials), [None] * trials, []

    def trial(i: int) -> None:
        cfg = config.resolve({"run_id": f"trial-{i}", "mlflow": mlflow_server, "mlflow_experiment": name}, env={})
        ready.wait()
        try:
            trackers[i] = Tracker(cfg.record, cfg.publishing.tracking, cfg.gates, "local", {})
        except BaseException as exc:  # reported below, with the trial
            errors.append((i, exc))

    threads = [threading.Thread(target=trial, args=(i,)) for i in range(trials)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert [t.failed for t in trackers] == [None] * trials
    experiment = MlflowClient(tracking_uri=mlflow_server).get_experiment_by_name(name)
    runs = MlflowClient(tracking_uri=mlflow_server).search_runs([experiment.experiment_id], max_results=100)
    assert sorted(r.info.run_id for r in runs) == sorted(t.run_id for t in trackers)

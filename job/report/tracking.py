"""MLflow tracking, optional: with --mlflow URI (or MLflow's own MLFLOW_TRACKING_URI) a run is also an MLflow run.

- at start (after the store check, before any data is read): the server is probed; unreachable -> exit 4;
- params: the resolved config (each value as MLflow stores it, a string); tags: run id, preset, platform,
  job version and source revision;
- metrics: every epoch's training/validation loss and accuracy (step = epoch) as they happen, then the test
  metrics and the parity figures;
- artifacts: the published run folder; the ONNX model as an MLflow model (onnx flavor, with its signature and an
  input example), registered under --mlflow-model-name when given;
- the MLflow run ends FINISHED, or FAILED / KILLED (a signal) with the job's exit code as a tag;
- a server that fails after the probe (errors, resets, no answer) never fails or holds up the run: MLflow's HTTP
  retries and timeouts are bounded (`HTTP_BOUNDS`: a request that hangs costs at most 3 x 10 s plus 3 s of
  backoff), every call runs with a deadline (`CALL_DEADLINE_S`), and the first call that fails is a warning plus
  an `output_failed` event and ends the tracking of this run: the run is still published, its exit code its own.

Needs the `mlflow` extra (`pip install ".[mlflow]"`); the default image does not include it.
"""

import contextlib
import json
import logging
import os
import time
from pathlib import Path

from job.config.parts import GateConfig, RunRecord, TrackingConfig
from job.contract import INPUT_NAME
from job.errors import ConfigError, StorageError
from job.gates.text import shown
from job.report.outputs import bounded, output_failed
from job.storage.layout import MODEL_ONNX

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = "5"
PROBE_DEADLINE_S = 15.0  # the probe's own wall-clock bound (a server that trickles bytes defeats socket timeouts)
# MLflow's defaults retry a failing server for minutes (7 retries, backoff factor 2, 120 s timeout, and any
# Retry-After the server asks for). The job's bounds, applied as a ceiling over values set in the environment:
HTTP_BOUNDS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": 2,
    "MLFLOW_HTTP_REQUEST_TIMEOUT": 10,
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": 1,
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": 0,
    "MLFLOW_ARTIFACT_UPLOAD_DOWNLOAD_TIMEOUT": 30,
}
CALL_DEADLINE_S = 50.0  # one tracking call (the final upload included); the first to fail ends the tracking


def bound_http(env=None) -> None:
    """Cap MLflow's HTTP retries, timeouts and backoff (read by MLflow at each request), and ignore Retry-After."""
    env = os.environ if env is None else env
    for key, ceiling in HTTP_BOUNDS.items():
        try:
            value = min(float(env.get(key, ceiling)), ceiling)
        except ValueError:
            value = ceiling
        env[key] = str(int(value)) if key != "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER" else str(value)
    env["MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER"] = "false"


CHAMPION = "champion"  # the registered model's alias for the last version that passed the configured gates
DIGEST_CHARS = 36  # what MLflow's tracking store keeps of a dataset digest


def gates_passed(gates: GateConfig, metrics: dict) -> bool:
    """A version is blessed only when a gate was configured (--min-accuracy above 0, or --baseline) and every
    configured gate passed; with no gate nothing was checked, and the alias does not move."""
    if gates.min_accuracy <= 0 and not gates.baseline:
        return False
    if gates.min_accuracy > 0 and not metrics.get("test_accuracy", 0.0) >= gates.min_accuracy:
        return False
    baseline = metrics.get("baseline")
    return not gates.baseline or (isinstance(baseline, dict) and baseline.get("passed") is True)


def _mlflow():
    try:
        import mlflow
    except ImportError:
        raise ConfigError("--mlflow needs MLflow: pip install '.[mlflow]' (or unset MLFLOW_TRACKING_URI)") from None
    return mlflow


@contextlib.contextmanager
def _quick_requests():
    """MLflow retries a dead server for minutes by default; a probe should answer in seconds."""
    bound_http()
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT=PROBE_TIMEOUT_S)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def probe(uri: str) -> dict:
    """The tracking server answers: a storage error (exit 4) naming it otherwise."""
    mlflow = _mlflow()
    from mlflow.tracking import MlflowClient

    with _quick_requests():  # MlflowException, requests' ConnectionError, no answer...: all mean "not reachable"
        _, reason = bounded(lambda: MlflowClient(tracking_uri=uri).search_experiments(max_results=1), PROBE_DEADLINE_S)
    if reason:
        raise StorageError(
            f"MLflow tracking server {shown(uri)} cannot be reached ({reason}); start it, fix --mlflow / "
            "MLFLOW_TRACKING_URI, or unset it"
        )
    return {"uri": uri, "mlflow": mlflow.__version__}


class Tracker:
    """One MLflow run mirroring one job run."""

    def __init__(
        self, record: RunRecord, tracking: TrackingConfig, gates: GateConfig, platform_name: str, versions: dict
    ):
        """`record`: the run's settings (its params); `tracking`: the server, experiment and model name; `gates`:
        what decides whether a registered version becomes the champion."""
        self.record, self.tracking, self.gates = record, tracking, gates
        self.mlflow = _mlflow()
        self.run_id: str | None = None
        self.failed: str | None = None  # why tracking stopped; every later call is skipped
        bound_http()
        self._call("start", self._start, platform_name, versions)

    def _call(self, stage: str, fn, *args):
        """`fn(*args)` with CALL_DEADLINE_S; a failure or a timeout: a warning, an `output_failed` event, and the
        end of this run's tracking. Returns fn's result, or None."""
        if self.failed:
            return None
        t0 = time.monotonic()
        result, reason = bounded(lambda: fn(*args), CALL_DEADLINE_S)
        if reason is None:
            return result
        self.failed = f"{stage}: {reason}"
        seconds = round(time.monotonic() - t0, 1)
        output_failed(
            "MLflow tracking",
            f"{shown(self.tracking.uri)} failed at {stage} after {seconds} s ({reason}); the run goes on untracked",
            stage=stage,
            seconds=seconds,
        )
        return None

    def _start(self, platform_name: str, versions: dict) -> None:
        record, tracking = self.record, self.tracking
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking.uri)
        experiment_id = self._experiment_id(tracking.experiment)
        tags = {
            "cifar10_job.run_id": record.run_id,
            "cifar10_job.preset": record.preset,
            "cifar10_job.platform": platform_name,
            "cifar10_job.version": versions.get("cifar10-job", ""),
            "cifar10_job.revision": versions.get("revision", ""),
            "mlflow.runName": record.run_id,
        }
        run_id = self.client.create_run(experiment_id, tags=tags).info.run_id
        if not isinstance(run_id, str) or not run_id:
            raise ValueError("the server answered create-run without a run id")
        self.run_id = run_id
        params = {k: str(v)[:6000] for k, v in record.params.items()}
        from mlflow.entities import Param

        self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in sorted(params.items())])
        log.info("MLflow run %s in experiment %s at %s", self.run_id, tracking.experiment, tracking.uri)

    def _experiment_id(self, name: str) -> str:
        """The experiment's id, creating it if it does not exist. Trials of a sweep (Katib, SageMaker, Vertex) start
        together: when another job created it between the lookup and the creation, the server answers
        RESOURCE_ALREADY_EXISTS, and this job looks it up again instead of running untracked."""
        from mlflow.exceptions import MlflowException

        experiment = self.client.get_experiment_by_name(name)
        if experiment:
            return experiment.experiment_id
        try:
            return self.client.create_experiment(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS" or not (again := self.client.get_experiment_by_name(name)):
                raise
            return again.experiment_id

    def on_event(self, event: str, record: dict) -> None:
        if event == "epoch" and not self.failed:
            self._call(f"epoch {record.get('epoch')}", self._log_epoch, record)

    def _log_epoch(self, record: dict) -> None:
        metrics = {k: v for k, v in record.items() if isinstance(v, float) and k not in ("seconds",)}
        from mlflow.entities import Metric

        step, now = int(record["epoch"]), int(__import__("time").time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def finish(self, run_dir: Path, metrics: dict, sample_images) -> dict | None:
        """Test metrics, the run folder, the ONNX model (registered when asked); returns what was logged, or None
        when the tracking failed (then or earlier)."""
        return self._call("finish", self._finish, run_dir, metrics, sample_images)

    def _finish(self, run_dir: Path, metrics: dict, sample_images) -> dict:
        mlflow = self.mlflow
        final = {
            "test_accuracy": metrics["test_accuracy"],
            "test_loss": metrics["test_loss"],
            "onnx_test_accuracy": metrics["onnx_test_accuracy"],
            "parity_max_abs_diff": max(
                metrics["parity"]["onnxruntime"]["max_abs_diff"], metrics["parity"]["savedmodel"]["max_abs_diff"]
            ),
        }
        for key, value in final.items():
            self.client.log_metric(self.run_id, key, float(value))
        self._lineage(run_dir, metrics)
        self.client.log_artifacts(self.run_id, str(run_dir), artifact_path="run")
        import onnx
        from mlflow.models import infer_signature

        mlflow.set_tracking_uri(self.tracking.uri)
        with mlflow.start_run(run_id=self.run_id):
            onnx_model = onnx.load(str(run_dir / MODEL_ONNX))
            example = {INPUT_NAME: sample_images}
            import onnxruntime as ort

            probs = ort.InferenceSession(str(run_dir / MODEL_ONNX), providers=["CPUExecutionProvider"]).run(
                None, {INPUT_NAME: sample_images}
            )[0]
            info = mlflow.onnx.log_model(
                onnx_model,
                name="model",
                input_example=example,
                signature=infer_signature(example, probs),
                registered_model_name=self.tracking.model_name or None,
                onnx_execution_providers=["CPUExecutionProvider"],
                # named, not inferred: inference loads the model in a subprocess (minutes on a loaded machine)
                pip_requirements=mlflow.onnx.get_default_pip_requirements(),
            )
        logged = {"mlflow_run_id": self.run_id, "model_uri": info.model_uri, "tracking_uri": self.tracking.uri}
        if self.tracking.model_name:
            version = str(info.registered_model_version)
            logged["registered_model"] = {"name": self.tracking.model_name, "version": version}
            # a refused run (exit 6) never gets here: the alias stays where it was
            if gates_passed(self.gates, metrics):
                self.client.set_registered_model_alias(self.tracking.model_name, CHAMPION, version)
                logged["registered_model"]["alias"] = CHAMPION
        log.info("MLflow: %s", json.dumps(logged))
        return logged

    def _lineage(self, run_dir: Path, metrics: dict) -> None:
        """The data as MLflow 3 dataset inputs (the training data's sha256, the test split's fingerprint), and the
        signing key's fingerprint as a tag. MLflow keeps 36 characters of a dataset digest: the whole sha256 is the
        dataset's profile."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        from job.runtime.redact import redact
        from job.storage.signing import signature_fingerprint

        data = metrics.get("data") if isinstance(metrics.get("data"), dict) else {}
        uri = redact(str(data.get("source", "")))
        source_type = "s3" if uri.startswith("s3://") else "local" if uri.startswith("/") else "code"
        inputs = []
        for name, context, digest, kind in (
            ("training-data", "training", str(data.get("source_sha256", "")), "sha256"),
            ("test-split", "test", str(data.get("test_fingerprint", "")), "test_fingerprint"),
        ):
            if not digest:
                continue
            dataset = Dataset(
                name=name,
                digest=digest[:DIGEST_CHARS],
                source_type=source_type,
                source=json.dumps({"uri": uri}),
                profile=json.dumps({kind: digest, "sizes": data.get("sizes")}),
            )
            inputs.append(DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context)]))
        if inputs:
            self.client.log_inputs(self.run_id, datasets=inputs)
        fingerprint = signature_fingerprint(run_dir)
        if fingerprint:
            self.client.set_tag(self.run_id, "cifar10_job.signing_key_sha256", fingerprint)

    def close(self) -> None:
        self._call("close", lambda: self.client.set_terminated(self.run_id, "FINISHED"))

    def fail(self, exit_code: int) -> None:
        """Best effort: the run is ending anyway; its exit code is what matters."""
        if self.failed or not self.run_id:
            return
        _, reason = bounded(lambda: self._mark_failed(exit_code), CALL_DEADLINE_S)
        if reason:
            log.warning("could not mark MLflow run %s as failed (%s)", self.run_id, reason)

    def _mark_failed(self, exit_code: int) -> None:
        self.client.set_tag(self.run_id, "cifar10_job.exit_code", str(exit_code))
        self.client.set_terminated(self.run_id, "KILLED" if exit_code in (130, 143) else "FAILED")

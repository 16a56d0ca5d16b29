"""The hyperparameter-tuning metric, where a platform's tuner reads it.

Vertex AI: a HyperparameterTuningJob trial reads the metric its study spec names (`metricId`) from what
Google's cloudml-hypertune library writes (a JSON-lines file, /tmp/hypertune/output.metrics unless
CLOUD_ML_HP_METRIC_FILE says otherwise). Vertex sets CLOUD_ML_TRIAL_ID in every trial's container; outside a
trial nothing is written.
SageMaker: its tuner reads metrics from the logs with the job's MetricDefinitions (the per-epoch line of
job.train.callbacks.report_epoch; infra/aws/sagemaker-create-training-job.json holds the regexes).

The metric is validation accuracy: tuning on the test split would make its score meaningless.
Vertex points the library at /var/hypertune/output.metrics (cloudml-hypertune#6): the image runs as uid 10001, so the
Dockerfile creates that folder for it; where it still cannot be written, the trial fails with one line (exit 2).
Katib: the StdOut collector reads the `name=value` line of job.train.callbacks.metrics_line.
"""

import os

METRIC = "val_accuracy"
_tuner = None  # one per process: the library keeps the trial's last 100 values in the file


def report(record: dict) -> None:
    """After each epoch: the validation accuracy at that epoch, as the trial's latest value."""
    if METRIC not in record or not os.environ.get("CLOUD_ML_TRIAL_ID"):
        return
    global _tuner
    import hypertune

    try:
        if _tuner is None:
            _tuner = hypertune.HyperTune()
        _tuner.report_hyperparameter_tuning_metric(
            hyperparameter_metric_tag=METRIC, metric_value=record[METRIC], global_step=record["epoch"]
        )
    except OSError as exc:
        # Vertex reads the metric only where it said (/var/hypertune/, root's unless the image gives it away): writing
        # it anywhere else would run every trial to its end for nothing, so the trial stops here, saying why.
        from job.errors import ConfigError
        from job.gates.text import shown

        path = os.environ.get("CLOUD_ML_HP_METRIC_FILE", hypertune.hypertune._DEFAULT_METRIC_PATH)
        raise ConfigError(
            f"hyperparameter tuning: cannot write the metric file {shown(path, 256)} as uid {os.getuid()} "
            f"({shown(exc.strerror or exc, 120)}); the tuner reads it only there: use an image in which this user "
            f"owns {shown(os.path.dirname(path), 256)} (the Dockerfile creates /var/hypertune for uid 10001) or run "
            "the trial as root"
        ) from None

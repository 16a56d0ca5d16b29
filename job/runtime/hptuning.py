"""The hyperparameter-tuning metric, where a platform's tuner reads it.

Vertex AI: a HyperparameterTuningJob trial reads the metric its study spec names (`metricId`) from what
Google's cloudml-hypertune library writes (a JSON-lines file, /tmp/hypertune/output.metrics unless
CLOUD_ML_HP_METRIC_FILE says otherwise). Vertex sets CLOUD_ML_TRIAL_ID in every trial's container; outside a
trial nothing is written.
SageMaker: its tuner reads metrics from the logs with the job's MetricDefinitions (the per-epoch line of
job.train.callbacks.report_epoch; infra/aws/sagemaker-create-training-job.json holds the regexes).

The metric is validation accuracy: tuning on the test split would make its score meaningless.
"""

import os

METRIC = "val_accuracy"
_tuner = None  # one per process: the library keeps the trial's last 100 values in the file


def report(record: dict) -> None:
    """After each epoch: the validation accuracy at that epoch, as the trial's latest value."""
    if METRIC not in record or not os.environ.get("CLOUD_ML_TRIAL_ID"):
        return
    global _tuner
    if _tuner is None:
        import hypertune

        _tuner = hypertune.HyperTune()
    _tuner.report_hyperparameter_tuning_metric(
        hyperparameter_metric_tag=METRIC, metric_value=record[METRIC], global_step=record["epoch"]
    )

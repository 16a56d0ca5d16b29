"""The sweeps read a real run's log the way their collectors do: a 2-epoch job's stdout and stderr, one file as
Katib's StdOut collector gets them (`1>/var/log/katib/metrics.log 2>&1`), parsed with Katib's default filter and
its rules (lines holding a metric name, a leading RFC 3339 time as the timestamp, exact names); and the SageMaker
tuning job's MetricDefinitions over the same log. Each finds one value per epoch, equal to history.csv."""

import csv
import json
import re
from datetime import datetime

import pytest

from helpers import ROOT

KATIB_FILTER = r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)"  # Katib's DefaultFilter


def katib_observations(log: str, metrics: list[str]) -> list[tuple[str, str, str]]:
    """(timestamp, name, value) as katib's file-metricscollector parseLogsInTextFormat makes them."""
    found = []
    for line in log.split("\n"):
        if not any(m in line for m in metrics):
            continue
        stamp, _, _ = line.partition(" ")
        try:
            datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            stamp = ""
        for match in re.finditer(KATIB_FILTER, line):
            name, value = match.group(1).strip(), match.group(2).strip()
            if name in metrics:
                found.append((stamp, name, value))
    return found


@pytest.fixture(scope="module")
def two_epochs(second_run):
    """The shared 2-epoch run's log (tests/conftest.py, second_run: a Vertex AI tuning trial, which writes its
    metric to a file and nothing more to the log), one training for these tests and test_pipeline.py's."""
    proc = second_run["proc"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    with (second_run["run"] / "history.csv").open() as fh:
        history = list(csv.DictReader(fh))
    assert len(history) == 2
    for line in proc.stdout.splitlines():  # stdout still carries only JSON events
        json.loads(line)
    return {"log": proc.stdout + proc.stderr, "history": history}


def test_katib_reads_the_objective_once_per_epoch_equal_to_history(two_epochs):
    import k8s_manifests as k8s
    from kubeflow_katib_api.models import V1beta1Experiment

    (doc,) = k8s.docs(ROOT / "infra" / "katib" / "experiment.yaml")
    objective = V1beta1Experiment.from_dict(doc).spec.objective
    metrics = [objective.objective_metric_name, *objective.additional_metric_names]
    observations = katib_observations(two_epochs["log"], metrics)
    for metric in metrics:
        values = [float(v) for _, name, v in observations if name == metric]
        assert values == [float(row[metric]) for row in two_epochs["history"]], metric
    assert all(stamp for stamp, _, _ in observations)  # each observation keeps the time the epoch ended


def test_sagemaker_tuning_metric_definitions_read_one_value_per_epoch(two_epochs):
    spec = json.loads((ROOT / "infra" / "aws" / "sagemaker-hyperparameter-tuning-job.json").read_text())
    definitions = spec["TrainingJobDefinition"]["AlgorithmSpecification"]["MetricDefinitions"]
    column = {"train:loss": "loss", "train:accuracy": "accuracy", "validation:loss": "val_loss"}
    column["validation:accuracy"] = "val_accuracy"
    assert {d["Name"] for d in definitions} == set(column)
    for definition in definitions:
        found = [float(v) for v in re.findall(definition["Regex"], two_epochs["log"])]
        expected = [float(row[column[definition["Name"]]]) for row in two_epochs["history"]]
        assert found == expected, definition["Name"]

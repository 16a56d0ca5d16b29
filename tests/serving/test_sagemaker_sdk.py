"""The SageMaker Python SDK v3 example (examples/sagemaker/model_trainer.py), checked offline: the real SDK, in
its own venv, builds the CreateTrainingJob request it would send (role validation skipped with the SDK's own
SAGEMAKER_VALIDATE_ROLE=false, since IAM is unreachable), and that request is validated against botocore's
service model and against what the job expects on SageMaker."""

import json
import os
import subprocess

from venvs import compat_venv

from helpers import ROOT

BUILD = """
import json, sys
sys.path.insert(0, sys.argv[1])
import boto3
from sagemaker.core.helper.session_helper import Session
import model_trainer as mt
boto = boto3.session.Session(aws_access_key_id="k", aws_secret_access_key="s", region_name="us-east-1")
session = Session(boto_session=boto, default_bucket="my-bucket")
trainer = mt.build_trainer(sys.argv[2], "arn:aws:iam::123456789012:role/cifar10-job", "my-bucket", session)
print(json.dumps(trainer._create_training_job_args(input_data_config=mt.inputs("my-bucket"), boto3=True), default=str))
"""
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/cifar10-job:latest"


def test_model_trainer_builds_a_request_sagemaker_accepts_and_the_job_understands():
    python = compat_venv(ROOT / "infra" / "serving" / "sagemaker-sdk.txt")
    proc = subprocess.run(
        [str(python), "-c", BUILD, str(ROOT / "examples" / "sagemaker"), IMAGE],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "SAGEMAKER_VALIDATE_ROLE": "false"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    request = json.loads(proc.stdout.strip().splitlines()[-1])

    import botocore.session
    from botocore.validate import ParamValidator

    model = botocore.session.get_session().get_service_model("sagemaker").operation_model("CreateTrainingJob")
    report = ParamValidator().validate(request, model.input_shape)
    assert not report.has_errors(), report.generate_report()

    from job.config import hyperparameter_layer

    assert hyperparameter_layer(request["HyperParameters"])  # every hyperparameter is one of the job's settings
    assert request["AlgorithmSpecification"]["TrainingImage"] == IMAGE and request["EnableManagedSpotTraining"]
    assert request["CheckpointConfig"]["LocalPath"] == "/opt/ml/checkpoints"  # where the job resumes from
    assert request["TensorBoardOutputConfig"]["LocalPath"] == "/opt/ml/output/tensorboard"  # where it writes
    import re

    line = "Epoch 3/10 - 41.2s - accuracy: 0.7812 - loss: 0.9461 - val_accuracy: 0.7604 - val_loss: 1.0123"
    found = {
        m["Name"]: re.search(m["Regex"], line).group(1) for m in request["AlgorithmSpecification"]["MetricDefinitions"]
    }
    assert found == {"train:accuracy": "0.7812", "validation:accuracy": "0.7604"}
    print("ModelTrainer request:", json.dumps({k: request[k] for k in ("HyperParameters", "TensorBoardOutputConfig")}))

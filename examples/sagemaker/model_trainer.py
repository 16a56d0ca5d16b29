"""Submit the job with the SageMaker Python SDK v3 `ModelTrainer` (v2's `Estimator` is gone), as an alternative to
the raw `infra/aws/sagemaker-create-training-job.json`:

    pip install sagemaker-train==1.27.0
    python examples/sagemaker/model_trainer.py IMAGE_URI ROLE_ARN BUCKET

Managed Spot training with checkpoints synced to S3 (`/opt/ml/checkpoints`, where the job resumes from),
TensorBoard collected from `/opt/ml/output/tensorboard` (the job writes there on SageMaker), the per-epoch metrics
from the job's log lines, and hyperparameters that are the job's own settings (`--preset`, `--epochs`, ...).
`tests/compat` builds this request offline and validates it against botocore's CreateTrainingJob model.
"""

import sys

from sagemaker.core.shapes import MetricDefinition, TensorBoardOutputConfig
from sagemaker.train import ModelTrainer
from sagemaker.train.configs import CheckpointConfig, Compute, InputData, OutputDataConfig, StoppingCondition

# The job prints "Epoch 3/10 - 41.2s - accuracy: 0.7812 - loss: 0.9461 - val_accuracy: ..." on stderr.
METRICS = [
    MetricDefinition(name=name, regex=rf"Epoch \d+/\d+ - .* {key}: ([0-9.]+)")
    for name, key in (("train:accuracy", "- accuracy"), ("validation:accuracy", "val_accuracy"))
]


def build_trainer(image: str, role: str, bucket: str, session=None) -> ModelTrainer:
    trainer = ModelTrainer(
        training_image=image,
        role=role,
        base_job_name="cifar10-train",
        sagemaker_session=session,
        compute=Compute(instance_type="ml.m5.xlarge", instance_count=1, enable_managed_spot_training=True),
        stopping_condition=StoppingCondition(max_runtime_in_seconds=7200, max_wait_time_in_seconds=10800),
        hyperparameters={"preset": "fast", "epochs": "10"},
        output_data_config=OutputDataConfig(s3_output_path=f"s3://{bucket}/cifar10/output"),
        checkpoint_config=CheckpointConfig(
            s3_uri=f"s3://{bucket}/cifar10/checkpoints", local_path="/opt/ml/checkpoints"
        ),
    )
    return trainer.with_tensorboard_output_config(
        TensorBoardOutputConfig(
            s3_output_path=f"s3://{bucket}/cifar10/tensorboard", local_path="/opt/ml/output/tensorboard"
        )
    ).with_metric_definitions(METRICS)


def inputs(bucket: str) -> list[InputData]:
    return [InputData(channel_name="train", data_source=f"s3://{bucket}/datasets/cifar10-jpeg-train.tar.gz")]


if __name__ == "__main__":
    image, role, bucket = sys.argv[1:4]
    build_trainer(image, role, bucket).train(input_data_config=inputs(bucket), wait=False)

"""`train --dry-run`: everything a run would check before training, and what it would do; no training, no
TensorFlow. Fails exactly as the run would (exit 2 for config, 3 for data, 4 for storage, tracking, TensorBoard or
CI report files), the --baseline included (read and verified, as the run reads it before the data)."""

from job.config import Config
from job.data.describe import describe
from job.storage import open_store, s3_options_from
from job.storage.runs import savedmodel_dir


def plan(cfg: Config, platform) -> dict:
    store = open_store(cfg.out, s3_options_from(cfg), cfg.layout)
    store.probe()
    checkpoints = None
    if cfg.checkpoint_dir:
        from job.train.checkpoint import Checkpoints  # the storage side only; TensorFlow loads on resume

        checkpoints = Checkpoints(cfg.checkpoint_dir, cfg.run_id, s3_options_from(cfg))
        checkpoints.probe()
    from job.report.outputs import probe_outputs

    outputs = probe_outputs(cfg)  # TensorBoard folder, CI report files
    baseline = None
    if cfg.baseline:  # read and verified as the run reads it: a missing or untrusted baseline fails here too
        from job.report.baseline import load_baseline
        from job.storage.signing import trust_of

        found = load_baseline(cfg.baseline, s3_options_from(cfg), trust_of(cfg))
        baseline = {"uri": found.uri, "run_id": found.run_id, "test_accuracy": found.test_accuracy}
    tracking = None
    if cfg.mlflow:
        from job.report.tracking import probe

        tracking = probe(cfg.mlflow)
    return {
        "run_id": cfg.run_id,
        "platform": platform.name,
        "workers": platform.num_workers,
        "cluster": cluster_summary(platform),
        "data": describe(cfg.data, s3_options_from(cfg)),
        "train": {
            "preset": cfg.preset,
            "model": cfg.model,
            "epochs": cfg.epochs,
            "batch_size": cfg.batch_size,
            "precision": cfg.precision,
        },
        "publish": {
            "store": store.uri,
            "layout": cfg.layout,
            "savedmodel": savedmodel_dir(cfg.layout),
            "run": f"{store.uri}/{cfg.run_id}" if cfg.layout == "runs" else store.uri,
        },
        "checkpoints": checkpoints.location if checkpoints else None,
        "mlflow": tracking,
        "baseline": baseline,
        "outputs": outputs,
    }


def cluster_summary(platform) -> dict:
    """What an operator checks before a long multi-worker run: the workers, this pod's index, chief or not."""
    tf_config = platform.tf_config or {}
    task = tf_config.get("task", {})
    return {
        "workers": tf_config.get("cluster", {}).get("worker", []) + tf_config.get("cluster", {}).get("chief", []),
        "task": f"{task.get('type', 'worker')} {task.get('index', 0)}" if tf_config else None,
        "chief": platform.is_chief,
        "source": platform.name,
    }

"""`train --dry-run`: everything a run would check before training, and what it would do; no training, no
TensorFlow. Fails exactly as the run would (exit 2 for config, 3 for data, 4 for storage, tracking, TensorBoard or
CI report files), the --baseline included (read and verified, as the run reads it before the data)."""

from job.config import Config
from job.data.describe import describe
from job.storage import open_store
from job.storage.layout import savedmodel_dir


def plan(cfg: Config, platform) -> dict:
    publishing, gates = cfg.publishing, cfg.gates
    store = open_store(publishing.out, publishing.s3, publishing.layout)
    store.probe()
    checkpoints = None
    if cfg.checkpoint_dir:
        from job.train.checkpoint import Checkpoints  # the storage side only; TensorFlow loads on resume

        checkpoints = Checkpoints(cfg.checkpoint_dir, cfg.run_id, publishing.s3)
        checkpoints.probe()
    from job.report.outputs import probe_outputs

    outputs = probe_outputs(cfg.runtime.log_dir)  # TensorBoard folder, CI report files
    baseline = None
    if gates.baseline:  # read and verified as the run reads it: a missing or untrusted baseline fails here too
        from job.report.baseline import load_baseline
        from job.storage.signing import trust_of

        found = load_baseline(gates.baseline, publishing.s3, trust_of(gates.trust))
        baseline = {"uri": found.uri, "run_id": found.run_id, "test_accuracy": found.test_accuracy}
    tracking = None
    if publishing.tracking.uri:
        from job.report.tracking import probe

        tracking = probe(publishing.tracking.uri)
    return {
        "run_id": cfg.run_id,
        "platform": platform.name,
        "workers": platform.num_workers,
        "cluster": cluster_summary(platform),
        "data": describe(cfg.data, publishing.s3),
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

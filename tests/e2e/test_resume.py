"""Preemption safety: SIGTERM mid-epoch -> checkpoint -> exit 143 -> resume to the same end state."""

import json
import shutil
import signal
import time

import pytest

from helpers import make_image_tree, make_tar, run_job, start_job, train_args, wait_for_event

EPOCHS, BATCH = 3, 4


@pytest.fixture(scope="module")
def resume_data(tmp_path_factory):
    base = tmp_path_factory.mktemp("resume")
    make_image_tree(base / "tree", per_class=60, fmt="png", seed=3)
    return make_tar(base / "tree", base / "data.tar"), base / "cache"


def _args(data, cache, out, run_id, ckpt=None, batch=BATCH):
    extra = {"checkpoint_dir": ckpt} if ckpt else {}
    return train_args(data, out, run_id=run_id, cache=cache, epochs=EPOCHS, batch_size=batch, **extra)


@pytest.fixture(scope="module")
def preempted(resume_data, tmp_path_factory):
    """Start a run, SIGTERM it right after its first epoch ends, then resume it to the end."""
    data, cache = resume_data
    base = tmp_path_factory.mktemp("preempted")
    out, ckpt = base / "out", base / "ckpt"
    proc = start_job(*_args(data, cache, out, "pre-1", ckpt))
    wait_for_event(proc, "epoch")  # the first epoch is done
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rest_out, stderr = proc.communicate(timeout=120)
    stopped = {
        "rc": proc.returncode,
        "seconds": time.monotonic() - sent,
        "stderr": stderr,
        "state": json.loads((ckpt / "pre-1" / "state.json").read_text()),
    }
    print(f"SIGTERM-to-exit: {stopped['seconds']:.2f}s")
    resumed = run_job(*_args(data, cache, out, "pre-1", ckpt))
    return {"stopped": stopped, "resumed": resumed, "out": out, "ckpt": ckpt, "data": data, "cache": cache}


def test_sigterm_saves_a_checkpoint_and_exits_143(preempted):
    stopped = preempted["stopped"]
    assert stopped["rc"] == 143, stopped["stderr"][-2000:]
    assert "preempted:" in stopped["stderr"] and "--run-id pre-1" in stopped["stderr"]
    state = stopped["state"]
    assert (state["epoch"], state["step"]) != (EPOCHS, 0)  # it stopped before the end
    assert state["epoch"] >= 1 and len(state["history"]) == state["epoch"]
    assert stopped["seconds"] < 30  # well inside a platform's grace period


def test_resumed_run_finishes_with_every_batch_trained_exactly_once(preempted, resume_data, tmp_path):
    resumed = preempted["resumed"]
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming run pre-1" in resumed.stderr
    metrics = json.loads((preempted["out"] / "pre-1" / "metrics.json").read_text())
    state = preempted["stopped"]["state"]
    assert metrics["training"]["resumed_from"]["epoch"] == state["epoch"]
    assert metrics["training"]["resumed_from"]["step"] == state["step"]
    rows = (preempted["out"] / "pre-1" / "history.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == [str(e) for e in range(1, EPOCHS + 1)]
    # an uninterrupted run with the same config: same number of optimizer steps, similar accuracy
    data, cache = resume_data
    ref = run_job(*_args(data, cache, tmp_path / "ref", "ref-1"))
    assert ref.returncode == 0, ref.stderr[-2000:]
    ref_metrics = json.loads((tmp_path / "ref" / "ref-1" / "metrics.json").read_text())
    steps_per_epoch = -(-metrics["data"]["sizes"]["train"] // BATCH)
    assert (
        metrics["training"]["optimizer_steps"] == ref_metrics["training"]["optimizer_steps"] == EPOCHS * steps_per_epoch
    )
    assert abs(metrics["test_accuracy"] - ref_metrics["test_accuracy"]) <= 0.15


def test_mismatched_checkpoint_is_refused(preempted, tmp_path):
    proc = run_job(*_args(preempted["data"], preempted["cache"], tmp_path / "o", "pre-1", preempted["ckpt"], batch=8))
    assert proc.returncode == 7 and "different configuration" in proc.stderr and "batch_size" in proc.stderr
    assert not (tmp_path / "o" / "pre-1").exists()


@pytest.mark.parametrize("damage", ["state", "model"])
def test_corrupt_checkpoint_is_refused(preempted, tmp_path, damage):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(preempted["ckpt"], ckpt)
    if damage == "state":
        (ckpt / "pre-1" / "state.json").write_text("{truncated")
    else:
        model_file = json.loads((ckpt / "pre-1" / "state.json").read_text())["model_file"]
        (ckpt / "pre-1" / model_file).write_bytes(b"\0" * 100)
    proc = run_job(*_args(preempted["data"], preempted["cache"], tmp_path / "o", "pre-1", ckpt))
    assert proc.returncode == 7 and "corrupt" in proc.stderr
    assert not (tmp_path / "o" / "pre-1").exists()


# The keys checkpoints were fingerprinted with before the config pieces (issue 32), in the order they were written.
OLD_FINGERPRINT_KEYS = (
    *("model", "width", "activation", "bn_momentum", "drop_last", "epochs", "batch_size", "optimizer"),
    *("learning_rate", "momentum", "weight_decay", "bias_lr_scale", "lookahead_every", "stem_bias_epochs"),
    *("label_smoothing", "augment", "crop_padding", "seed", "limit", "val_fraction", "test_fraction"),
)


def test_an_old_config_json_resumes_an_old_checkpoint_or_is_refused_with_exit_7(preempted, tmp_path):
    """A checkpoint fingerprinted from the hand-kept key list, re-run from a flat config.json of before tta_level
    (--config): it resumes. The same checkpoint with a key this job does not write (as if the pieces' own field
    names had been fingerprinted) is a different configuration: exit 7, nothing published."""
    ckpt = tmp_path / "ckpt"
    shutil.copytree(preempted["ckpt"], ckpt)
    state_file = ckpt / "pre-1" / "state.json"
    state = json.loads(state_file.read_text())
    config = json.loads((preempted["out"] / "pre-1" / "config.json").read_text())
    old_fp = {k: config[k] for k in OLD_FINGERPRINT_KEYS}
    old_fp.update({k: state["fingerprint"][k] for k in ("data_sha256", "sizes", "class_names")})
    state_file.write_text(json.dumps({**state, "fingerprint": old_fp}, indent=1))
    old_config = {k: v for k, v in config.items() if k not in ("tta_level", "run_id")}
    (tmp_path / "old.json").write_text(json.dumps({**old_config, "tta": False, "tta_translate": False}))

    def rerun(out):
        args = ["--config", str(tmp_path / "old.json"), "--run-id", "pre-1", "--checkpoint-dir", str(ckpt)]
        return run_job("train", *args, "--out", str(out))

    resumed = rerun(tmp_path / "o")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming run pre-1" in resumed.stderr
    assert json.loads((tmp_path / "o" / "pre-1" / "metrics.json").read_text())["training"]["resumed_from"]
    state_file.write_text(json.dumps({**state, "fingerprint": {**old_fp, "name": old_fp["model"]}}, indent=1))
    refused = rerun(tmp_path / "o2")
    assert refused.returncode == 7 and "different configuration (differs in: name)" in refused.stderr
    assert not (tmp_path / "o2" / "pre-1").exists()

"""The CI user: the regression gate against the last good model, and the reports GitHub Actions and GitLab CI
show, from real runs of the CLI (the CI systems emulated by exactly the variables they set)."""

import json
import shutil
import subprocess
import sys

import pytest

from helpers import ROOT, make_image_tree, make_tar, run_job, train_args, tree_snapshot


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("ci")
    return make_tar(make_image_tree(base / "tree", per_class=20, seed=3), base / "data.tar")


def _train(data, out, run_id, cache, *extra, env=None):
    return run_job(*train_args(data, out, run_id=run_id, cache=cache, epochs=3), *extra, env=env or {})


def test_the_baseline_gate_refuses_a_worse_model_blesses_an_equal_one_and_refuses_another_split(data, tmp_path):
    store, cache = tmp_path / "store", tmp_path / "cache"
    github = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md")}
    first = _train(data, store, "good", cache, env=github)
    assert first.returncode == 0, first.stderr[-3000:]
    good = json.loads((store / "good" / "metrics.json").read_text())
    assert len(good["data"]["test_fingerprint"]) == 64
    summary = (tmp_path / "summary.md").read_text()
    print("GitHub step summary of the first run:\n" + summary)
    assert "### CIFAR-10 run `good`" in summary and f"{100 * good['test_accuracy']:.2f}%" in summary

    # A weaker model (the learning rate starved): exit 6, one line naming both accuracies, nothing published.
    before = tree_snapshot(store)
    weak = _train(data, store, "weak", cache, "--learning-rate", "1e-7", "--baseline", str(store), env=github)
    assert weak.returncode == 6, weak.stderr[-3000:]
    (error,) = [line for line in weak.stderr.splitlines() if line.startswith("error:")]
    assert f"{good['test_accuracy']:.4f}" in error and "below the baseline" in error
    assert tree_snapshot(store) == before
    (command,) = [line for line in weak.stderr.splitlines() if line.startswith("::error")]
    assert command.startswith("::error title=quality error::test accuracy")  # the kind of the error line
    print(f"weaker run: {error}\n{command}")
    assert json.loads(weak.stdout.splitlines()[-1])["event"] == "run_failed"  # stdout: JSON events only

    # The same recipe again (deterministic: the same accuracy) against the run folder: blessed, published.
    gitlab = {"GITLAB_CI": "true", "CI_PROJECT_DIR": str(tmp_path)}
    again = _train(data, store, "again", cache, "--baseline", str(store / "good"), env=gitlab)
    assert again.returncode == 0, again.stderr[-3000:]
    compared = json.loads((store / "again" / "metrics.json").read_text())["baseline"]
    assert compared["passed"] and compared["delta"] == 0.0 and compared["uri"] == str(store / "good")
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    families = {
        f.name: f.samples[0].value for f in text_string_to_metric_families((tmp_path / "metrics.txt").read_text())
    }
    print("GitLab metrics.txt:", families)
    assert families["cifar10_test_accuracy"] == pytest.approx(good["test_accuracy"])
    assert families["cifar10_baseline_delta"] == 0.0

    # Another test split (another seed carves another holdout): refused before training, exit 2.
    other = _train(data, tmp_path / "other", "other", cache, "--seed", "7", "--baseline", str(store))
    assert other.returncode == 2 and "other images" in other.stderr, other.stderr[-2000:]
    assert "Epoch 1/" not in other.stderr  # refused before any training


def test_a_baseline_that_cannot_be_trusted_is_refused(data, trained_run, tmp_path):
    """The baseline is read (and checked against its manifest) before any data is loaded: any published run
    serves, so this store is a copy of the shared run's (its latest.json names the run by id)."""
    from job.report.baseline import load_baseline

    store, cache = tmp_path / "store", tmp_path / "cache"
    shutil.copytree(trained_run["out"], store)
    assert load_baseline(str(store)).run_id == "tiny-1"  # trusted as it was published
    metrics = store / "tiny-1" / "metrics.json"
    metrics.write_text(metrics.read_text().replace("0", "1", 1))  # changed after publishing
    tampered = _train(data, tmp_path / "o", "x", cache, "--baseline", str(store))
    assert tampered.returncode == 3 and "does not match the run's manifest" in tampered.stderr
    missing = _train(data, tmp_path / "o", "x", cache, "--baseline", str(tmp_path / "nowhere"))
    assert missing.returncode in (3, 4) and missing.stderr.count("\nerror:") + missing.stderr.startswith("error:") == 1


WORKFLOWS = [
    (".github/workflows/ci.yml", "vendor.github-workflows"),
    ("examples/ci/github-actions.yml", "vendor.github-workflows"),
    ("examples/ci/gitlab-ci.yml", "vendor.gitlab-ci"),
]


def _check(path, schema):
    exe = shutil.which("check-jsonschema") or str(ROOT / ".venv" / "bin" / "check-jsonschema")
    return subprocess.run([exe, "--builtin-schema", schema, str(path)], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("path,schema", WORKFLOWS)
def test_workflow_files_validate_against_the_vendored_schemas(path, schema):
    proc = _check(ROOT / path, schema)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_broken_workflow_fails_its_schema(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text((ROOT / ".github/workflows/ci.yml").read_text().replace("runs-on:", "runs_on:"))
    assert _check(broken, "vendor.github-workflows").returncode != 0
    assert sys.executable  # the check ran in this interpreter's environment

"""A store on a full filesystem (out of inodes or bytes): the command's exit code says what happened, and a run
is visible only when complete. Real tmpfs mounts (the tests run as root; skipped where mounting is refused)."""

import json
import subprocess
from pathlib import Path

import pytest

from helpers import make_run_dir, run_job, train_args, tree_snapshot
from job.storage.runs import local_manifest_problems as verify_manifest


@pytest.fixture
def mount_tmpfs(tmp_path):
    mounted = []

    def mount(options: str) -> Path:
        point = tmp_path / f"fs{len(mounted)}"
        point.mkdir()
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def test_publish_with_every_inode_budget_is_all_or_nothing(tmp_path, mount_tmpfs):
    """For each inode budget, `job publish` either publishes the whole run and points latest.json at it, or
    exits 4 with one error line and the store exactly as it was (never a run without latest.json)."""
    run = make_run_dir(tmp_path, "r1")
    outcomes = {}
    for inodes in range(2, 16):
        store = mount_tmpfs(f"size=4m,nr_inodes={inodes}") / "store"
        before = tree_snapshot(store)
        proc = run_job("publish", str(run), str(store))
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        if proc.returncode == 0:
            assert (
                verify_manifest(store / "r1") == []
                and json.loads((store / "latest.json").read_text())["run_id"] == "r1"
            )
        else:
            assert proc.returncode == 4 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
            assert tree_snapshot(store) == before
        outcomes[inodes] = proc.returncode
    print("inodes -> exit code:", outcomes)
    assert 4 in outcomes.values() and 0 in outcomes.values()  # both sides of the boundary were exercised


def test_disk_full_while_exporting_is_a_storage_error_with_nothing_left(tiny_tar, tmp_path, mount_tmpfs):
    store = mount_tmpfs("size=300k") / "store"
    proc = run_job(*train_args(tiny_tar, store, cache=tmp_path / "cache"))
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 4, proc.stderr[-3000:]
    assert len(errors) == 1 and "is full" in errors[0] and "Traceback" not in proc.stderr
    assert [p.name for p in store.iterdir()] == []  # the staging folder is gone too

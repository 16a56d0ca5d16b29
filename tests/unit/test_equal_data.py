"""bench.equal_data: the train/test carve both sides of the equal-data comparison read (issue 34)."""

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from bench import equal_data

CLASSES = ("cat", "dog", "ship")
PER_CLASS = 6


def _tar(path: Path, names: list[str]) -> dict[str, bytes]:
    """A tar.gz with the given member names in that order; each member's bytes are unique."""
    blobs = {name: f"jpeg bytes of {name}".encode() for name in names}
    with tarfile.open(path, "w:gz") as archive:
        for name, blob in blobs.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            archive.addfile(info, io.BytesIO(blob))
    return blobs


def _names() -> list[str]:
    return [f"train/{c}/{i:04d}.jpg" for c in CLASSES for i in range(PER_CLASS)] + ["train/README.md"]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_carve_holds_out_per_class_images_and_copies_bytes_unchanged(tmp_path):
    blobs = _tar(tmp_path / "src.tar.gz", _names())
    counts = equal_data.carve(tmp_path / "src.tar.gz", tmp_path / "out", per_class=2, seed=0)
    assert counts == {"train": 12, "test": 6}
    files = _files(tmp_path / "out")
    for c in CLASSES:
        assert len([f for f in files if f.startswith(f"test/{c}/")]) == 2
        assert len([f for f in files if f.startswith(f"train/{c}/")]) == 4
    # every source image lands in exactly one split, byte for byte; the README is not an image
    by_source = {"train/" + f.split("/", 1)[1]: blob for f, blob in files.items()}
    assert len(by_source) == len(files) == 18
    assert by_source == {n: b for n, b in blobs.items() if n.endswith(".jpg")}


def test_carve_is_deterministic_whatever_the_archive_order(tmp_path):
    _tar(tmp_path / "a.tar.gz", _names())
    _tar(tmp_path / "b.tar.gz", list(reversed(_names())))
    equal_data.carve(tmp_path / "a.tar.gz", tmp_path / "a", per_class=2, seed=0)
    equal_data.carve(tmp_path / "b.tar.gz", tmp_path / "b", per_class=2, seed=0)
    equal_data.carve(tmp_path / "a.tar.gz", tmp_path / "c", per_class=2, seed=1)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert sorted(_files(tmp_path / "a")) != sorted(_files(tmp_path / "c"))


def test_a_class_too_small_to_hold_out_is_an_error(tmp_path):
    _tar(tmp_path / "src.tar.gz", _names())
    with pytest.raises(SystemExit, match="error: class 'cat' has 6 images"):
        equal_data.carve(tmp_path / "src.tar.gz", tmp_path / "out", per_class=PER_CLASS)


def test_cli_refuses_to_write_over_an_earlier_carve(tmp_path):
    _tar(tmp_path / "src.tar.gz", _names())
    cmd = [sys.executable, "-m", "bench.equal_data", "--source", str(tmp_path / "src.tar.gz"), "--per-class", "2"]
    root = Path(__file__).resolve().parents[2]
    first = subprocess.run([*cmd, "--out", str(tmp_path / "out")], cwd=root, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert "train 12 images, test 6 images" in first.stdout
    again = subprocess.run([*cmd, "--out", str(tmp_path / "out")], cwd=root, capture_output=True, text=True)
    assert again.returncode == 1
    assert (
        again.stderr.strip()
        == f"error: {tmp_path / 'out'} already has train/ or test/; remove them or choose another --out"
    )


def _write(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


def test_results_average_each_side_and_leave_unfinished_runs_pending(tmp_path):
    runs = tmp_path / "runs"
    for seed, accs in ((0, (0.90, 0.91, 0.92)), (1, (0.92, 0.93, 0.94))):
        ref = {f"tta{level}": acc for level, acc in enumerate(accs)}
        _write(
            runs / f"ref-s{seed}.json",
            {"test_accuracy": ref, "epochs": 9.9, "train_seconds": 1.0, "threads": 1, "precision": "bfloat16"}
            | {"torch": "x", "train_images": 40, "test_images": 10, "epochs_log": [], "loadavg_before": [1, 1, 1]}
            | {"loadavg_after": [2, 2, 2]},
        )
    _write(
        runs / "fast-s0" / "metrics.json",
        {"test_accuracy": 0.925, "training": {"epochs": 10, "seconds": 2.0, "precision": "mixed_bfloat16"}}
        | {"data": {"sizes": {"train": 40, "test": 10}}},
    )
    modes = {"none": 0.92, "mirror": 0.925, "mirror+translate": 0.93}
    _write(runs / "fast-s0-tta.json", {"modes": {k: {"test_accuracy": v} for k, v in modes.items()}})
    out = tmp_path / "result.json"
    cmd = [sys.executable, "-m", "bench.equal_data_results", "--root", str(tmp_path), "--out", str(out)]
    done = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    record = json.loads(out.read_text())
    assert record["summary"]["reference"] == {
        "runs": 2,
        "seeds": [0, 1],
        "mean_tta0": 0.91,
        "mean_tta1": 0.92,
        "mean_tta2": 0.93,
    }
    assert record["summary"]["fast"]["seeds"] == [0]
    assert record["summary"]["fast_minus_reference_tta1_points"] == 0.5
    assert [r.get("status") for r in record["runs"]] == [None, None, None, "pending"]
    assert "| `fast` | 1 (0) | 92.00% | 92.50% | 93.00% |" in done.stdout
    assert "| `fast` − reference (points) | | +1.00 | +0.50 | +0.00 |" in done.stdout

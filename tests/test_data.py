"""Data sources, splits and the decode cache, on small data made here."""

import shutil
import socket
import tarfile

import numpy as np
import pytest
from PIL import Image

from helpers import add_tar_member, class_image, make_cifar_python, make_image_tree, make_tar, run_job
from job import data
from job.errors import DataError


def test_image_folder_tar_and_targz_give_identical_arrays(tmp_path):
    tree = make_image_tree(tmp_path / "tree", per_class=3, test_per_class=2)
    results = [data.load(str(p), tmp_path / f"cache{i}") for i, p in enumerate(
        (tree, make_tar(tree, tmp_path / "d.tar"), make_tar(tree, tmp_path / "d.tar.gz")))]
    for ds in results:
        assert ds.class_names == sorted(ds.class_names) and len(ds.class_names) == 10
        assert ds.x_train.shape == (30, 32, 32, 3) and ds.x_train.dtype == np.uint8
        assert ds.x_test.shape == (20, 32, 32, 3) and set(ds.y_test) == set(range(10))
        np.testing.assert_array_equal(ds.x_train, results[0].x_train)
        np.testing.assert_array_equal(ds.y_train, results[0].y_train)


def test_png_pixels_are_exact_and_labels_follow_sorted_class_names(tmp_path):
    tree = tmp_path / "t"
    for cls in ("zebra", "ant"):
        (tree / "train" / cls).mkdir(parents=True)
    pixels = class_image(3, np.random.default_rng(0))
    Image.fromarray(pixels).save(tree / "train" / "zebra" / "a.png")
    Image.fromarray(pixels[::-1]).save(tree / "train" / "ant" / "b.png")
    ds = data.load(str(tree), tmp_path / "c")
    assert ds.class_names == ["ant", "zebra"]
    np.testing.assert_array_equal(ds.x_train[ds.y_train == 1][0], pixels)


def test_archive_wrapped_in_one_top_folder(tmp_path):
    tree = make_image_tree(tmp_path / "tree", classes=2, per_class=2)
    ds = data.load(str(make_tar(tree, tmp_path / "w.tar", arc_prefix="cifar/")), tmp_path / "c")
    assert len(ds.y_train) == 4


def test_cifar_python_folder_and_archive(tmp_path):
    folder = make_cifar_python(tmp_path / "src", per_batch=10)
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    for source in (folder, tmp_path / "src", tmp_path / "cifar-10-python.tar.gz"):
        ds = data.load(str(source), tmp_path / "cache")
        assert ds.x_train.shape == (50, 32, 32, 3) and ds.x_test.shape == (10, 32, 32, 3)
        assert ds.class_names[0] == "airplane" and ds.class_names[9] == "truck"
        # the first image of data_batch_1 is the first one the helper drew: CHW rows -> HWC exactly
        np.testing.assert_array_equal(ds.x_train[0], class_image(0, np.random.default_rng(0)))


def test_cifar_pickle_with_foreign_globals_is_refused(tmp_path):
    folder = make_cifar_python(tmp_path / "src", per_batch=2)
    (folder / "data_batch_1").write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")
    with pytest.raises(DataError, match="data_batch_1"):
        data.load(str(folder), tmp_path / "c")


def test_cache_hit_on_second_load_and_miss_when_source_changes(tmp_path):
    tree = make_image_tree(tmp_path / "tree", classes=2, per_class=3)
    tar = make_tar(tree, tmp_path / "d.tar")
    first = data.load(str(tar), tmp_path / "cache")
    second = data.load(str(tar), tmp_path / "cache")
    assert not first.from_cache and second.from_cache and first.sha256 == second.sha256
    np.testing.assert_array_equal(first.x_train, second.x_train)
    Image.fromarray(class_image(1, np.random.default_rng(5))).save(tree / "train" / "airplane" / "new.png")
    third = data.load(str(make_tar(tree, tmp_path / "d.tar")), tmp_path / "cache")
    assert not third.from_cache and len(third.y_train) == 7


def test_corrupt_cache_file_is_ignored(tmp_path):
    tree = make_image_tree(tmp_path / "tree", classes=2, per_class=2)
    ds = data.load(str(tree), tmp_path / "cache")
    for f in (tmp_path / "cache").glob("*.npz"):
        f.write_bytes(b"garbage")
    again = data.load(str(tree), tmp_path / "cache")
    assert not again.from_cache and np.array_equal(again.x_train, ds.x_train)


def test_splits_are_stratified_disjoint_and_deterministic():
    y = np.repeat(np.arange(10), 100)
    ids_as_images = np.arange(1000, dtype=np.int64).reshape(1000, 1, 1, 1)  # each "image" is its own id
    ds = data.Dataset(ids_as_images, y, list("abcdefghij"))
    a = data.split(ds, val_fraction=0.1, test_fraction=0.2, seed=3)
    b = data.split(ds, val_fraction=0.1, test_fraction=0.2, seed=3)
    c = data.split(ds, val_fraction=0.1, test_fraction=0.2, seed=4)
    ids = lambda x: set(x.reshape(-1).tolist())  # noqa: E731
    assert ids(a.x_train).isdisjoint(ids(a.x_test)) and ids(a.x_val).isdisjoint(ids(a.x_test))
    assert ids(a.x_train).isdisjoint(ids(a.x_val))
    assert len(ids(a.x_train) | ids(a.x_val) | ids(a.x_test)) == 1000
    assert np.bincount(a.y_test).tolist() == [20] * 10 and np.bincount(a.y_val).tolist() == [8] * 10
    assert ids(a.x_test) == ids(b.x_test) and ids(a.x_test) != ids(c.x_test)


def test_limit_is_a_stratified_subsample():
    y = np.repeat(np.arange(10), 50)
    ds = data.Dataset(np.zeros((500, 32, 32, 3), np.uint8), y, list("abcdefghij"))
    s = data.split(ds, val_fraction=0.1, test_fraction=0.1, seed=0, limit=200)
    total = np.bincount(np.concatenate([s.y_train, s.y_val, s.y_test]))
    assert total.tolist() == [20] * 10


def test_source_test_split_is_kept_as_test(tmp_path):
    tree = make_image_tree(tmp_path / "tree", classes=3, per_class=10, test_per_class=4)
    s = data.split(data.load(str(tree), tmp_path / "c"), val_fraction=0.1, test_fraction=0.1, seed=0)
    assert s.info["test_split"] == "source test split" and len(s.y_test) == 12 and len(s.y_train) == 27


def _offline() -> bool:
    try:
        socket.create_connection(("www.cs.toronto.edu", 443), timeout=2).close()
        return False
    except OSError:
        return True


@pytest.mark.skipif(not _offline(), reason="this check is about the offline behaviour")
def test_keras_source_fails_fast_offline_naming_alternatives(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(DataError, match="offline, pass --data"):
        data.load("keras", tmp_path)


# ---------------------------------------------------------------- bad inputs through the real CLI

def _bad_tree(tmp_path, problem):
    tree = make_image_tree(tmp_path / "tree", classes=3, per_class=3)
    if problem == "empty class":
        (tree / "train" / "zebra").mkdir()
    elif problem == "unknown test class":
        make_image_tree(tmp_path / "tree", classes=3, per_class=0, test_per_class=1)
        shutil.move(tree / "test" / "bird", tree / "test" / "unicorn")
    elif problem == "corrupt image":
        (tree / "train" / "bird" / "0001.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    elif problem == "truncated jpeg":
        Image.fromarray(class_image(0, np.random.default_rng(0))).save(tree / "train" / "bird" / "x.jpg")
        raw = (tree / "train" / "bird" / "x.jpg").read_bytes()
        (tree / "train" / "bird" / "x.jpg").write_bytes(raw[: len(raw) // 2])
    elif problem == "wrong size":
        Image.new("RGB", (64, 48)).save(tree / "train" / "bird" / "big.png")
    elif problem == "unsupported file":
        (tree / "train" / "bird" / "notes.txt").write_text("hello")
    elif problem == "one class":
        shutil.rmtree(tree / "train" / "bird")
        shutil.rmtree(tree / "train" / "automobile")
    elif problem == "no train folder":
        shutil.move(tree / "train", tree / "training")
    return tree


BAD_TREES = ["empty class", "unknown test class", "corrupt image", "truncated jpeg", "wrong size",
             "unsupported file", "one class", "no train folder"]


@pytest.mark.parametrize("problem", BAD_TREES)
def test_bad_image_trees_raise_data_error(tmp_path, problem):
    with pytest.raises(DataError):
        data.load(str(_bad_tree(tmp_path, problem)), tmp_path / "cache")


def _bad_tar(tmp_path, problem):
    tar = make_tar(make_image_tree(tmp_path / "tree", classes=2, per_class=2), tmp_path / "d.tar")
    if problem == "dotdot entry":
        add_tar_member(tar, "train/airplane/../../../evil.png", b"x")
    elif problem == "absolute entry":
        add_tar_member(tar, "/etc/evil.png", b"x")
    elif problem == "symlink entry":
        add_tar_member(tar, "train/airplane/link.png", symlink_to="/etc/passwd")
    return tar


@pytest.mark.parametrize("problem", ["dotdot entry", "absolute entry", "symlink entry"])
def test_unsafe_tar_entries_are_refused(tmp_path, problem):
    with pytest.raises(DataError, match="unsafe|link"):
        data.load(str(_bad_tar(tmp_path, problem)), tmp_path / "cache")


def test_symlink_in_folder_tree_is_refused(tmp_path):
    tree = make_image_tree(tmp_path / "tree", classes=2, per_class=2)
    (tree / "train" / "airplane" / "l.png").symlink_to(tree / "train" / "airplane" / "0000.png")
    with pytest.raises(DataError, match="link"):
        data.load(str(tree), tmp_path / "c")


@pytest.mark.parametrize("case", ["missing path", "not an archive", "corrupt gzip", "dotdot entry",
                                  "symlink entry", "corrupt image", "wrong size", "empty class"])
def test_cli_bad_data_exits_3_with_one_line_and_publishes_nothing(tmp_path, case):
    if case == "missing path":
        source = tmp_path / "nope.tar.gz"
    elif case == "not an archive":
        source = tmp_path / "data.zip"
        source.write_bytes(b"PK\x03\x04 not a tar")
    elif case == "corrupt gzip":
        source = tmp_path / "data.tar.gz"
        good = make_tar(make_image_tree(tmp_path / "t", classes=2, per_class=2), tmp_path / "g.tar.gz").read_bytes()
        source.write_bytes(good[: len(good) // 2])
    elif case in ("dotdot entry", "symlink entry"):
        source = _bad_tar(tmp_path, case)
    else:
        source = _bad_tree(tmp_path, case)
    out = tmp_path / "store"
    proc = run_job("train", "--data", str(source), "--out", str(out), "--cache-dir", str(tmp_path / "cache"))
    assert proc.returncode == 3, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "data error" in errors[0] and str(source.name) in errors[0]
    assert [p.name for p in out.iterdir()] == []  # no run folder, no staging leftovers

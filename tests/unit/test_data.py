"""Data sources, splits and the decode cache, on small data made here."""

import tarfile

import numpy as np
import pytest
from PIL import Image

from helpers import bad_tar, bad_tree, class_image, make_cifar_python, make_image_tree, make_tar
from job import data
from job.errors import DataError


def test_image_folder_tar_and_targz_give_identical_arrays(tmp_path):
    tree = make_image_tree(tmp_path / "tree", per_class=3, test_per_class=2)
    results = [
        data.load(str(p), tmp_path / f"cache{i}")
        for i, p in enumerate((tree, make_tar(tree, tmp_path / "d.tar"), make_tar(tree, tmp_path / "d.tar.gz")))
    ]
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


# ---------------------------------------------------------------- bad inputs

BAD_TREES = [
    "empty class",
    "unknown test class",
    "corrupt image",
    "truncated jpeg",
    "wrong size",
    "unsupported file",
    "one class",
    "no train folder",
]


@pytest.mark.parametrize("problem", BAD_TREES)
def test_bad_image_trees_raise_data_error(tmp_path, problem):
    with pytest.raises(DataError):
        data.load(str(bad_tree(tmp_path, problem)), tmp_path / "cache")


@pytest.mark.parametrize("problem", ["dotdot entry", "absolute entry", "symlink entry"])
def test_unsafe_tar_entries_are_refused(tmp_path, problem):
    with pytest.raises(DataError, match="unsafe|link"):
        data.load(str(bad_tar(tmp_path, problem)), tmp_path / "cache")


def test_symlink_in_folder_tree_is_refused(tmp_path):
    tree = make_image_tree(tmp_path / "tree", classes=2, per_class=2)
    (tree / "train" / "airplane" / "l.png").symlink_to(tree / "train" / "airplane" / "0000.png")
    with pytest.raises(DataError, match="link"):
        data.load(str(tree), tmp_path / "c")

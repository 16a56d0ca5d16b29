"""Every tar archive the job reads (training sources, `job predict`'s archives and standard input, the dry run's
description) goes through one reader, job.data.entries.Archive, with one bound on the whole archive: its members'
bytes (decompressed) and their number. A small .tar.gz that inflates to gigabytes is a data error (exit 3, one
`error:` line), never a MemoryError. The dry run reads with the same reader and the same layout rules as the run."""

import io
import resource
import struct
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import pytest
from PIL import Image

from helpers import ROOT, contract_model, job_env, make_run_dir, run_job

MEMORY_CAP = 3 * 1024**3  # address-space cap for the child: a bomb must be refused before this


def _jpeg(c=0) -> bytes:
    b = io.BytesIO()
    Image.new("RGB", (32, 32), (c, 90, 200)).save(b, "JPEG")
    return b.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _bomb(path: Path, members: int = 60, member_bytes: int = 60 * 1024 * 1024) -> Path:
    """~3.6 GB of zeros in a ~16 MB .tar.gz: every member within the 64 MiB per-entry limit, the whole far over the
    1 GiB archive limit and the child's memory cap. Written in about a second instead of 12 s of gzip: each piece
    of the tar stream is compressed on its own and ends in a full flush (so no piece refers back into another),
    and the 60 MB of zeros are compressed once and repeated. The gzip trailer's CRC is left 0: a reader within
    the limits stops a gigabyte before it."""

    def piece(data: bytes, last: bool = False) -> bytes:
        deflate = zlib.compressobj(1, zlib.DEFLATED, -15)
        return deflate.compress(data) + deflate.flush(zlib.Z_FINISH if last else zlib.Z_FULL_FLUSH)

    def header(name: str, size: int) -> bytes:
        info = tarfile.TarInfo(name)
        info.size = size
        return info.tobuf()

    zeros = piece(b"\0" * member_bytes)
    with path.open("wb") as out:
        out.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff")  # gzip: deflate, no name, no time
        for cls in ("cat", "dog"):
            image = _jpeg()
            out.write(piece(header(f"train/{cls}/0.jpg", len(image)) + image + bytes(-len(image) % 512)))
        for i in range(members):
            out.write(piece(header(f"train/cat/z{i}.jpg", member_bytes)) + zeros)
        out.write(piece(bytes(1024), last=True))  # the end-of-archive blocks
        total = 2 * 1536 + members * (512 + member_bytes) + 1024
        out.write(struct.pack("<II", 0, total % 2**32))
    return path


def _capped(argv, stdin=None, timeout=300):
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))

    return subprocess.run(
        [sys.executable, "-m", "job", *argv],
        stdin=stdin,
        capture_output=True,
        text=True,
        env=job_env(),
        cwd=ROOT,
        timeout=timeout,
        preexec_fn=cap,
    )


def test_a_gzip_bomb_training_archive_is_refused_with_a_data_error_not_a_memory_error(tmp_path):
    bomb = _bomb(tmp_path / "bomb.tar.gz")
    r = _capped(
        [
            "train",
            "--data",
            str(bomb),
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "s"),
            "--cache-dir",
            str(tmp_path / "c"),
        ]
    )
    assert r.returncode == 3, r.stderr[-400:]
    assert "Traceback" not in r.stderr and r.stderr.strip().splitlines()[-1].startswith("error: data error:")
    assert "uncompressed" in r.stderr.strip().splitlines()[-1], r.stderr[-400:]  # names what was over


def test_a_gzip_bomb_on_predict_stdin_is_bounded(tmp_path):
    run = make_run_dir(tmp_path, "run", files={"model.onnx": lambda p: contract_model(p, classes=2)})
    bomb = _bomb(tmp_path / "bomb.tar.gz")
    with bomb.open("rb") as fh:
        r = _capped(["predict", str(run), "-"], stdin=fh)
    assert r.returncode == 3, r.stderr[-400:]
    assert "Traceback" not in r.stderr and "MemoryError" not in r.stderr
    assert "standard input (a tar stream): its entries up to" in r.stderr, r.stderr[-400:]


def test_an_archive_of_too_many_entries_is_refused_by_the_run_and_the_dry_run(tmp_path, monkeypatch):
    """In process, the limit lowered to 50 (the real one, 200,000 entries, takes a minute to write and read): the
    run's loader and the dry run's describer both stop at entry 51, holding no list of every header."""
    from job.data import entries
    from job.data.describe import describe
    from job.data.sources import load
    from job.errors import DataError

    monkeypatch.setattr(entries, "MAX_ARCHIVE_MEMBERS", 50)
    many = tmp_path / "many.tar.gz"
    with tarfile.open(many, "w:gz") as t:
        _add(t, "train/cat/0.jpg", _jpeg())
        _add(t, "train/dog/0.jpg", _jpeg())
        for i in range(60):
            info = tarfile.TarInfo(f"train/d{i}")
            info.type = tarfile.DIRTYPE
            t.addfile(info)
    for read in (lambda: load(str(many), tmp_path / "c"), lambda: describe(str(many))):
        try:
            read()
        except DataError as exc:
            assert "over 50 entries, the limit for one archive" in str(exc), exc
        else:
            raise AssertionError("an archive over the entry limit was read")


def test_the_dry_run_refuses_what_the_run_refuses(tmp_path):
    tar = tmp_path / "nested.tar"
    with tarfile.open(tar, "w") as t:
        for name in ("train/cat/0.jpg", "train/dog/0.jpg", "train/cat/sub/1.jpg"):
            _add(t, name, _jpeg())
    dry = run_job("train", "--data", str(tar), "--dry-run", "--out", str(tmp_path / "s"), cwd=ROOT)
    assert dry.returncode == 3, dry.stdout[-300:]  # the run: "unexpected nesting at train/cat/sub/1.jpg" (exit 3)
    assert "unexpected nesting at train/cat/sub/1.jpg" in dry.stderr, dry.stderr[-300:]


@pytest.mark.parametrize(
    "names",
    [
        ("train/cat/0.jpg", "train/dog/0.jpg", "train/cat/sub/1.jpg"),  # nesting
        ("train/cat/0.jpg", "train/dog/0.jpg", "train/cat/notes.txt"),  # not an image
        ("train/cat/0.jpg", "train/dog/0.jpg", "train/x.jpg"),  # a file beside the classes
        ("train/cat/0.jpg", "train/dog/0.jpg", "/".join(["train", "cat", *["d"] * 2000, "1.jpg"])),  # 2,000 deep
        ("train/cat/0.jpg", "train/dog/0.jpg", "test/bird/0.jpg"),  # a test class train/ lacks
        ("train/cat/0.jpg",),  # one class
        ("cifar-10-batches-py/data_batch_1", "cifar-10-batches-py/test_batch"),  # no batches.meta
    ],
    ids=["nested", "txt", "beside", "deep", "test-class", "one-class", "no-meta"],
)
def test_the_dry_run_and_the_run_refuse_the_same_layouts_with_the_same_message(tmp_path, names):
    """In process: job.data.describe (the dry run) and job.data.sources.load (the run) on the same archive."""
    from job.data.describe import describe
    from job.data.sources import load
    from job.errors import DataError

    tar = tmp_path / "layout.tar"
    with tarfile.open(tar, "w", format=tarfile.PAX_FORMAT) as t:
        for name in names:
            _add(t, name, _jpeg())
    messages = []
    for read in (lambda: describe(str(tar)), lambda: load(str(tar), tmp_path / "c")):
        with pytest.raises(DataError) as refused:
            read()
        messages.append(str(refused.value))
    assert messages[0] == messages[1], messages

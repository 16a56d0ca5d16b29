"""Small synthetic data made by the tests: image-folder trees, tars, CIFAR python batches."""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def class_image(cls: int, rng: np.random.Generator, size=(32, 32)) -> np.ndarray:
    """A learnable synthetic image: class-specific colour and stripe pattern plus noise."""
    h, w = size[1], size[0]
    base = np.zeros((h, w, 3), np.float32)
    base[..., cls % 3] = 120 + 12 * cls
    stripes = (np.arange(w)[None, :] // (2 + cls % 4)) % 2
    base[..., (cls + 1) % 3] += 90 * (stripes if cls < 5 else stripes.T[:h, :w] if h == w else stripes)
    noise = rng.normal(0, 12, size=base.shape)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def make_image_tree(
    root: Path, *, classes: int = 10, per_class: int = 12, test_per_class: int = 0, fmt: str = "png", seed: int = 0
) -> Path:
    rng = np.random.default_rng(seed)
    for split, count in (("train", per_class), ("test", test_per_class)):
        for c in range(classes if count else 0):
            folder = root / split / CLASSES[c]
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.fromarray(class_image(c, rng)).save(folder / f"{i:04d}.{fmt}")
    return root


def make_tar(src: Path, dest: Path, *, arc_prefix: str = "") -> Path:
    mode = "w:gz" if dest.name.endswith(".gz") else "w"
    with tarfile.open(dest, mode) as tar:
        for path in sorted(src.rglob("*")):
            tar.add(path, arcname=arc_prefix + path.relative_to(src).as_posix(), recursive=False)
    return dest


def add_tar_member(tar_path: Path, name: str, data: bytes = b"", *, symlink_to: str | None = None) -> None:
    with tarfile.open(tar_path, "a") as tar:
        info = tarfile.TarInfo(name)
        if symlink_to is not None:
            info.type, info.linkname = tarfile.SYMTYPE, symlink_to
            tar.addfile(info)
        else:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def make_cifar_python(root: Path, *, per_batch: int = 20, seed: int = 0) -> Path:
    """A miniature cifar-10-batches-py folder in the official pickle format."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def write(name, n):
        labels = [int(i % 10) for i in range(n)]
        data = np.stack([class_image(c, rng).transpose(2, 0, 1).reshape(-1) for c in labels])
        with open(folder / name, "wb") as fh:
            pickle.dump(
                {
                    b"batch_label": name.encode(),
                    b"labels": labels,
                    b"data": data,
                    b"filenames": [f"{i}.png".encode() for i in range(n)],
                },
                fh,
            )

    for i in range(1, 6):
        write(f"data_batch_{i}", per_batch)
    write("test_batch", per_batch)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [c.encode() for c in CLASSES], b"num_vis": 3072}, fh)
    return folder


def built_once(tmp_path_factory, worker_id: str, name: str, build) -> Path:
    """`build(folder)` once per test run, whatever the number of xdist workers: the first worker to take the
    lock builds it in the run's shared base folder, the others wait and reuse it."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    root = root if worker_id == "master" else root.parent
    folder = root / name
    with FileLock(str(root / f"{name}.lock")):
        if not (folder / ".built").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            (folder / ".built").touch()
    return folder


def job_run_once(
    tmp_path_factory, worker_id: str, name: str, argv_of, env_of=lambda folder: None
) -> tuple[Path, subprocess.CompletedProcess]:
    """`run_job(*argv_of(folder), env=env_of(folder))` once per test run (built_once), its exit code and output kept
    in the folder: (the folder, the run as a CompletedProcess) for every worker."""

    def build(folder: Path) -> None:
        proc = run_job(*argv_of(folder), env=env_of(folder))
        (folder / "returncode").write_text(str(proc.returncode))
        (folder / "stdout").write_text(proc.stdout)
        (folder / "stderr").write_text(proc.stderr)

    folder = built_once(tmp_path_factory, worker_id, name, build)
    kept = [(folder / part).read_text() for part in ("returncode", "stdout", "stderr")]
    return folder, subprocess.CompletedProcess(["job", *argv_of(folder)], int(kept[0]), kept[1], kept[2])


def publish_folder(folder: Path, uri: str, run_id: str, finished_at: str = "2026-12-01T00:00:00Z") -> None:
    """Publish a prepared run folder into a store as the job does (stage, copy, publish). A local store is probed
    first, which makes its folder; a bucket made for the test needs no probe (a client and three requests)."""
    from job.storage import open_store

    store = open_store(uri)
    if not uri.startswith("s3://"):
        store.probe()
    staged = store.staging_dir(run_id)
    shutil.copytree(folder, staged, dirs_exist_ok=True)
    store.publish(staged, run_id, {"finished_at": finished_at})
    shutil.rmtree(staged, ignore_errors=True)


def job_env(**extra: str) -> dict:
    """The environment of a job subprocess: this one's, without stray JOB_* settings, importing this checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOB_")}
    env.update({"PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}, **extra)
    return env


def train_args(data, out, *, run_id: str | None = None, cache=None, epochs: int = 1, **flags) -> list[str]:
    """`train --data D --out O --epochs N [--run-id R] [--cache-dir C] [--flag value ...]` as argv."""
    args = ["train", "--data", str(data), "--out", str(out), "--epochs", str(epochs)]
    args += ["--run-id", run_id] if run_id else []
    args += ["--cache-dir", str(cache)] if cache else []
    for name, value in flags.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    return args


def start_job(*args: str, env: dict | None = None) -> subprocess.Popen:
    """The job CLI as a running process (text pipes), for tests that signal it or run several at once."""
    return subprocess.Popen(
        [sys.executable, "-m", "job", *args],
        cwd=ROOT,
        env=job_env(**(env or {})),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_event(proc: subprocess.Popen, event: str) -> dict:
    """Read the job's stdout (JSON events, one per line) until `event`; returns it."""
    import json

    for line in proc.stdout:
        record = json.loads(line)
        if record["event"] == event:
            return record
    raise AssertionError(f"the job ended (exit {proc.wait()}) without a {event!r} event")


def signal_after(proc: subprocess.Popen, marker: str, sig: int, delay: float = 0.0) -> tuple[list[str], float]:
    """Read `proc`'s stderr (text) until a line holding `marker`, wait `delay` s, then send `sig`, unless `proc`
    has ended by then (its returncode is then set). Returns the stderr lines read and how many seconds late the
    signal went (a starved test process sends it late)."""
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if marker in line:
            break
    started = time.monotonic()
    time.sleep(delay)
    late = time.monotonic() - started - delay
    if proc.poll() is None:
        proc.send_signal(sig)
    return seen, late


def run_job(
    *args: str, env: dict | None = None, cwd: Path | None = None, timeout: int = 600, module: str = "job"
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        env=job_env(**(env or {})),
        cwd=cwd or ROOT,
        timeout=timeout,
    )


def run_job_forked(
    *args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """run_job for commands that do not import TensorFlow (publish, runs, predict, a refusal before the data): a
    forked child of the pre-imported zygote (tests/forked.py), its own process, exit status and output, without a
    fresh interpreter's start-up."""
    from forked import run_forked

    return run_forked(list(args), env=job_env(**(env or {})), cwd=cwd or ROOT, timeout=timeout)[0]


def bad_tree(tmp_path, problem):
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


def bad_tar(tmp_path, problem):
    tar = make_tar(make_image_tree(tmp_path / "tree", classes=2, per_class=2), tmp_path / "d.tar")
    if problem == "dotdot entry":
        add_tar_member(tar, "train/airplane/../../../evil.png", b"x")
    elif problem == "absolute entry":
        add_tar_member(tar, "/etc/evil.png", b"x")
    elif problem == "symlink entry":
        add_tar_member(tar, "train/airplane/link.png", symlink_to="/etc/passwd")
    return tar


def make_run_dir(
    base: Path, name: str = "run", content: str = "a", *, run_id: str = "r1", files: dict | None = None
) -> Path:
    """The tests' one builder of a fake finished run folder: `base/name` holding `files`, then its manifest (run id
    `run_id`). `files` maps a relative path to its text, its bytes, or a function that writes the file at that
    path (a model); by default a metrics.json and sub/file.bin holding `content`."""
    from job.storage.manifest import write_manifest

    d = base / name
    d.mkdir(parents=True, exist_ok=True)
    for rel, value in (files or {"metrics.json": '{"test_accuracy": 0.5}', "sub/file.bin": content}).items():
        path = d / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if callable(value):
            value(path)
        elif isinstance(value, bytes):
            path.write_bytes(value)
        else:
            path.write_text(value)
    write_manifest(d, run_id)
    return d


def sagemaker_env(opt_ml: Path) -> dict:
    """The variables SageMaker sets in a training container (with /opt/ml moved to a test folder)."""
    return {
        "JOB_OPT_ML": str(opt_ml),
        "SM_MODEL_DIR": str(opt_ml / "model"),
        "TRAINING_JOB_NAME": "tj-42",
        "SM_CHANNEL_TRAIN": str(opt_ml / "input" / "data" / "train"),
        "SM_OUTPUT_DATA_DIR": str(opt_ml / "output" / "data"),
    }


def run_measured(
    args: list[str], env: dict | None = None, timeout: int = 120
) -> tuple[subprocess.CompletedProcess, float]:
    """Run a command (stdin closed) and return it with its peak resident memory in MiB (the largest of the
    process tree's, from getrusage in a wrapper that runs nothing else)."""
    import tempfile

    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        wrapper = (
            "import resource, subprocess, sys; rc = subprocess.run(sys.argv[2:], stdin=subprocess.DEVNULL)"
            ".returncode; open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN)"
            ".ru_maxrss)); sys.exit(rc)"
        )
        proc = subprocess.run(
            [sys.executable, "-c", wrapper, rss.name, *args],
            capture_output=True,
            text=True,
            env=job_env(**(env or {})),
            cwd=ROOT,
            timeout=timeout,
        )
        peak = int(rss.read() or 0) / 1024
    return proc, peak


def tree_snapshot(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file (and every folder name) under root: to prove nothing changed."""
    import hashlib

    if not root.exists():
        return {}
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(root.rglob("*"))
    }


def contract_model(
    path: Path,
    *,
    classes: int = 2,
    class_names: list | None = None,
    input_name: str = "image",
    input_type: int | None = None,
    output_name: str = "probabilities",
    **extra_meta: str,
) -> Path:
    """A tiny ONNX model that follows the model contract (uint8 [N, 32, 32, 3] -> float [N, classes]): the
    softmax of the first `classes` channel means (at most 3). The knobs break one term of the contract each."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info(input_name, input_type or TensorProto.UINT8, [None, 32, 32, 3])
    y = helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [None, classes])
    nodes = [
        helper.make_node("Cast", [input_name], ["f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["f"], ["m"], axes=[1, 2], keepdims=0),
        helper.make_node("Slice", ["m", "s", "e", "a"], ["picked"]),
        helper.make_node("Softmax", ["picked"], [output_name]),
    ]
    inits = [helper.make_tensor(n, TensorProto.INT64, [1], [v]) for n, v in (("s", 0), ("e", classes), ("a", 1))]
    model = helper.make_model(
        helper.make_graph(nodes, "g", [x], [y], inits), opset_imports=[helper.make_opsetid("", 13)]
    )
    names = class_names if class_names is not None else [f"c{i}" for i in range(classes)]
    meta = {"class_names": names if isinstance(names, str) else json.dumps(names), **extra_meta}
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    path.write_bytes(model.SerializeToString())
    return path


# A raw control, line or paragraph separator, or bidi control: what forges a line or hides text on a terminal.
_FORGING = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def assert_nothing_forged(proc) -> None:
    """Nothing the process printed can forge a line: no line starts a GitHub workflow command (`::...`, except the
    job's own `::error title=` report under GITHUB_ACTIONS), none holds the runner's legacy `##[` form, a terminal
    escape, a carriage return or a bidi control (names read from outside reach the output only through the text gate)."""
    for line in (proc.stdout + "\n" + proc.stderr).split("\n"):
        assert not line.lstrip().startswith("::") or line.startswith("::error title="), ascii(line)
        assert "##[" not in line and not _FORGING.search(line), ascii(line)


def needs(ok: bool, what: str, install: str, installer: str = "apt-get") -> None:
    """A test that needs a tool the machine lacks fails, saying how to install it (`make test` installs it). It is
    skipped, with the reason in the summary, only where the machine cannot install it at all (no `installer`)."""
    if ok:
        return
    if shutil.which(installer) is None:
        pytest.skip(f"{what} is missing and this machine has no {installer} to install it ({install})")
    pytest.fail(f"{what} is missing: run `make test` (it installs it) or `{install}`", pytrace=False)


def static_server(root: Path):
    """A static server of `root` (the page at `web/`, beside its contract reader) on 127.0.0.1, answering once
    `web/index.html` loads: (process, base URL)."""
    from s3_server import free_port

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(root)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{base}/web/index.html", timeout=1).read()
            break
        except OSError:
            time.sleep(0.1)
    return server, base


def page_runs(urls: list[str]) -> list[dict]:
    """Each whole page URL in the real Chromium (run-in-chromium.mjs --each-url: one browser, a fresh context per
    URL): one result each, in order."""
    proc = subprocess.run(
        ["node", str(ROOT / "examples" / "web" / "run-in-chromium.mjs"), "--each-url", *urls],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT / "examples" / "web",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [r["url"] for r in results] == urls, proc.stdout[-3000:]
    return results

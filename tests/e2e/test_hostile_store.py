"""A store handed to a stranger: every byte read from a store is hostile. A table of tampered stores, unsafe
names, links, FIFOs, broken contracts and secrets, each run through the real CLI (`runs`, `predict`,
`publish`, `train --print-config`) against a local folder and the real S3 test server.

Each case asserts the documented exit code, exactly one `error:` line naming the problem, no traceback,
nothing written outside the paths the command was given (the whole test folder and the bucket are compared
before and after; a failed download leaves no partial folder), and no canary secret in any output.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from forked import run_forked, run_fresh
from PIL import Image

from helpers import (
    CLASSES,
    ROOT,
    assert_nothing_forged,
    class_image,
    contract_model,
    job_env,
    make_run_dir,
    needs,
    publish_folder,
    tree_snapshot,
)
from job.storage.manifest import write_manifest

CANARY = "c4nary-5ecret-93f1"
RUN = "good"


@dataclass
class TamperedStore:
    """One store (local folder or s3://bucket/team) holding the published run `good` and its latest.json."""

    backend: str
    tmp: Path
    uri: str
    env: dict
    bucket: str = ""
    client: object = None

    @property
    def image(self) -> str:
        return str(self.tmp / "cat.png")

    @property
    def dest(self) -> str:
        return str(self.tmp / "dest")

    def run_uri(self, run: str = RUN) -> str:
        return f"{self.uri}/{run}"

    def key(self, name: str) -> str:
        return f"team/{name}"

    def put(self, name: str, data: bytes, **extra) -> None:
        if self.backend == "s3":
            self.client.put_object(Bucket=self.bucket, Key=self.key(name), Body=data, **extra)
            return
        path = Path(self.uri) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.exists():
            path.unlink()
        path.write_bytes(data)

    def get(self, name: str) -> bytes:
        if self.backend == "s3":
            return self.client.get_object(Bucket=self.bucket, Key=self.key(name))["Body"].read()
        return (Path(self.uri) / name).read_bytes()

    def delete(self, name: str) -> None:
        if self.backend == "s3":
            self.client.delete_object(Bucket=self.bucket, Key=self.key(name))
        else:
            (Path(self.uri) / name).unlink()

    def manifest(self, edit: Callable[[dict], object]) -> None:
        m = json.loads(self.get(f"{RUN}/manifest.json"))
        result = edit(m)
        self.put(f"{RUN}/manifest.json", json.dumps(m if result is None else result).encode())

    def pointer(self, value) -> None:
        self.put("latest.json", value if isinstance(value, bytes) else json.dumps(value).encode())

    def snapshot(self) -> dict:
        state = {"files": tree_snapshot(self.tmp)}
        if self.backend == "s3":
            objs = self.client.list_objects_v2(Bucket=self.bucket).get("Contents", [])
            state["objects"] = {o["Key"]: o["ETag"] for o in objs}
        return state


@dataclass
class Case:
    name: str
    code: int
    build: Callable[[TamperedStore], list[str]]  # prepares the store, returns the CLI arguments
    says: str
    backends: tuple = ("local", "s3")
    env: dict | None = None


def flip(data: bytes, at: int = 200, n: int = 64) -> bytes:
    """The same length, n bytes changed."""
    at = min(at, max(len(data) - n, 0))
    return data[:at] + bytes(b ^ 0xFF for b in data[at : at + n]) + data[at + n :]


def cmd(*args: str):
    """CLI arguments with {store}, {run}, {image}, {dest} filled in."""

    def build(c: TamperedStore) -> list[str]:
        values = {"store": c.uri, "run": c.run_uri(), "image": c.image, "dest": c.dest}
        return [a.format(**values) for a in args]

    return build


def then(prepare: Callable[[TamperedStore], object], *args: str):
    run = cmd(*args)

    def build(c: TamperedStore) -> list[str]:
        prepare(c)
        return run(c)

    return build


READERS = {  # the commands that read a run: each must refuse what is wrong with it
    "verify": ("runs", "verify", "{store}", RUN),
    "download": ("runs", "download", "{store}", RUN, "{dest}"),
    "predict-run": ("predict", "{run}", "{image}"),
    "predict-store": ("predict", "{store}", "{image}"),
    "export-serving": ("runs", "export-serving", "{store}", RUN, "{dest}"),
}
NODE = {  # the Node.js consumer (examples/node) reads local stores the same way
    "node-run": ("node", "{run}", "{image}"),
    "node-store": ("node", "{store}", "{image}"),
}
NODE_DIR = ROOT / "examples" / "node"


def for_readers(name: str, prepare, says: str, readers=tuple(READERS), code: int = 3, backends=("local", "s3")):
    return [Case(f"{name} [{r}]", code, then(prepare, *READERS[r]), says, backends) for r in readers]


# ------------------------------------------------------------------------------------ manifest paths

UNSAFE_PATHS = {
    "'..' escape": "../../victim.txt",
    "absolute": "/tmp/victim.txt",
    "double slash": "//tmp/victim.txt",
    "'.' segment": "./model.onnx",
    "empty segment": "sub//x.txt",
    "trailing slash": "sub/",
    "backslash": "..\\victim.txt",
    "escape sequence": "a\x1b[31m.txt",
    "NUL": "a\x00.txt",
    "newline": "a\nb.txt",
    "empty": "",
    "over 1024 characters": "a" * 1100,
}


def _unsafe_path(path):
    def prepare(c: TamperedStore):
        victim = b"owned"
        if path == "../../victim.txt":
            c.put(f"{RUN}/{path}" if c.backend == "s3" else "../victim.txt", victim)  # the file it names exists
        c.manifest(
            lambda m: m["files"].append(
                {"path": path, "bytes": len(victim), "sha256": hashlib.sha256(victim).hexdigest()}
            )
        )

    return prepare


MANIFEST_PATHS = [
    case
    for label, path in UNSAFE_PATHS.items()
    for case in for_readers(f"manifest path {label}", _unsafe_path(path), "path", ("verify", "download", "predict-run"))
]


def _entry(**change):
    return lambda c: c.manifest(lambda m: m["files"][0].update(change))


MANIFEST_SHAPES = [
    *for_readers(
        "manifest not JSON",
        lambda c: c.put(f"{RUN}/manifest.json", b"{"),
        "not valid JSON",
        ("verify", "download", "predict-run"),
    ),
    *for_readers("manifest a list", lambda c: c.manifest(lambda m: [m]), "not a manifest", ("verify", "download")),
    *for_readers(
        "manifest files not a list",
        lambda c: c.manifest(lambda m: m.update(files={})),
        "not a manifest",
        ("verify", "download"),
    ),
    *for_readers(
        "manifest entry a string",
        lambda c: c.manifest(lambda m: m["files"].append("x")),
        "not an object",
        ("verify", "download"),
    ),
    *for_readers("manifest path a number", _entry(path=7), "not a string", ("verify", "download")),
    *for_readers("manifest bytes negative", _entry(bytes=-1), "'bytes'", ("verify", "download")),
    *for_readers("manifest bytes a string", _entry(bytes="12"), "'bytes'", ("verify", "download")),
    *for_readers("manifest bytes a bool", _entry(bytes=True), "'bytes'", ("verify",)),
    *for_readers("manifest bytes 1 TB", _entry(bytes=10**12), "'bytes'", ("verify", "download")),
    *for_readers("manifest sha256 not hex", _entry(sha256="z" * 64), "'sha256'", ("verify", "download")),
    *for_readers("manifest sha256 missing", _entry(sha256=None), "'sha256'", ("verify",)),
    *for_readers(
        "manifest lists itself",
        lambda c: c.manifest(lambda m: m["files"].append({"path": "manifest.json", "bytes": 1, "sha256": "0" * 64})),
        "listed twice",
        ("verify", "download"),
    ),
    *for_readers(
        "manifest lists a path twice",
        lambda c: c.manifest(lambda m: m["files"].append(dict(m["files"][0]))),
        "listed twice",
        ("verify", "download"),
    ),
    *for_readers(
        "manifest missing",
        lambda c: c.delete(f"{RUN}/manifest.json"),
        "no manifest",
        ("verify", "download", "predict-run"),
    ),
]

# ------------------------------------------------------------------------------------ content


def _tamper(name: str, **extra):
    return lambda c: c.put(f"{RUN}/{name}", flip(c.get(f"{RUN}/{name}")), **extra)


def _forged_metadata(c: TamperedStore):
    """Rewritten model.onnx whose sha256 metadata matches its new content: metadata is never proof."""
    data = flip(c.get(f"{RUN}/model.onnx"))
    c.put(f"{RUN}/model.onnx", data, Metadata={"sha256": hashlib.sha256(data).hexdigest()})


CONTENT = [
    *for_readers("model.onnx: 64 bytes flipped, same size", _tamper("model.onnx"), "model.onnx"),
    *[
        Case(
            f"model.onnx: 64 bytes flipped, same size [{r}]", 3, then(_tamper("model.onnx"), *a), "manifest", ("local",)
        )
        for r, a in NODE.items()
    ],
    *for_readers(
        "metrics.json: same-size tamper",
        _tamper(
            "metrics.json",
        ),
        "metrics.json",
        ("verify", "download"),
    ),
    *for_readers("MODEL_CARD.md: same-size tamper", _tamper("MODEL_CARD.md"), "MODEL_CARD.md", ("verify", "download")),
    *for_readers("model.onnx: forged sha256 metadata", _forged_metadata, "model.onnx", backends=("s3",)),
    *for_readers(
        "model.onnx: truncated",
        lambda c: c.put(f"{RUN}/model.onnx", c.get(f"{RUN}/model.onnx")[:-10]),
        "model.onnx",
        ("verify", "download", "predict-run"),
    ),
    *for_readers(
        "model.onnx: missing",
        lambda c: c.delete(f"{RUN}/model.onnx"),
        "model.onnx",
        ("verify", "download", "predict-run"),
    ),
    *for_readers(
        "a file not in the manifest", lambda c: c.put(f"{RUN}/extra.bin", b"x"), "not in the manifest", ("verify",)
    ),
    Case(
        "int8 model tampered [predict --int8]",
        3,
        then(_tamper("model.int8.onnx"), "predict", "{run}", "{image}", "--int8"),
        "model.int8.onnx",
    ),
]

# ------------------------------------------------------------------------------------ latest.json

POINTERS = {
    "run_id '../outside'": {"run_id": "../outside"},
    "run_id absolute": {"run_id": "/tmp"},
    "run_id a number": {"run_id": 5},
    "run_id empty": {"run_id": ""},
    "run_id hidden": {"run_id": ".incoming-x"},
    "run_id with a slash": {"run_id": "good/sub"},
    "run_id with an escape": {"run_id": "good\x1b[2J"},
    "a list": [{"run_id": "good"}],
    "no run_id": {"uri": "/tmp"},
}


def _pointer_cases():
    cases = []
    for label, value in POINTERS.items():
        for reader, args in (
            ("predict", ("predict", "{store}", "{image}")),
            ("show", ("runs", "show", "{store}", "latest")),
            ("download", ("runs", "download", "{store}", "latest", "{dest}")),
            ("verify", ("runs", "verify", "{store}", "latest")),
        ):
            cases.append(
                Case(f"latest.json {label} [{reader}]", 3, then(lambda c, v=value: c.pointer(v), *args), "latest.json")
            )
    for label in ("run_id '../outside'", "run_id absolute", "run_id a number", "run_id with a slash", "a list"):
        prepare = lambda c, v=POINTERS[label]: c.pointer(v)  # noqa: E731
        cases.append(
            Case(f"latest.json {label} [node-store]", 3, then(prepare, *NODE["node-store"]), "unsafe run id", LOCAL)
        )
    cases += [
        Case(
            "latest.json not JSON [predict]",
            3,
            then(lambda c: c.pointer(b"{"), "predict", "{store}", "{image}"),
            "not valid JSON",
        ),
        Case(
            "latest.json names a missing run [show]",
            3,
            then(lambda c: c.pointer({"run_id": "nope"}), "runs", "show", "{store}", "latest"),
            "holds no run",
        ),
        Case(
            "latest.json names a missing run [predict]",
            3,
            then(lambda c: c.pointer({"run_id": "nope"}), "predict", "{store}", "{image}"),
            "no manifest",
        ),
    ]
    return cases


# ------------------------------------------------------------------------------------ links and FIFOs (local)


def _link(name: str, target: Callable[[TamperedStore], Path]):
    def prepare(c: TamperedStore):
        path, dest = Path(c.uri) / name, target(c)
        if path.exists() or path.is_symlink():
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        path.symlink_to(dest)

    return prepare


def _outside_copy(name: str):
    """A file outside the store with exactly the content the manifest expects: a link to it must still fail."""

    def target(c: TamperedStore) -> Path:
        out = c.tmp / "outside" / Path(name).name
        out.parent.mkdir(exist_ok=True)
        out.write_bytes((Path(c.uri) / name).read_bytes())
        return out

    return target


def _fifo(name: str):
    def prepare(c: TamperedStore):
        path = Path(c.uri) / name
        path.unlink()
        os.mkfifo(path)

    return prepare


def _subfolder_link(c: TamperedStore):
    run = Path(c.uri) / RUN
    (run / "sub").mkdir()
    (run / "sub" / "x.txt").write_text("x")
    c.manifest(lambda m: None)  # unchanged manifest: sub/ is extra
    outside = c.tmp / "outside-dir"
    shutil.move(run / "sub", outside)
    (run / "sub").symlink_to(outside)


LOCAL = ("local",)
LINKS = [
    *for_readers(
        "model.onnx a symlink to an identical file",
        _link(f"{RUN}/model.onnx", _outside_copy(f"{RUN}/model.onnx")),
        "model.onnx",
        backends=LOCAL,
    ),
    *for_readers(
        "metrics.json a symlink",
        _link(f"{RUN}/metrics.json", _outside_copy(f"{RUN}/metrics.json")),
        "metrics.json",
        ("verify", "download"),
        backends=LOCAL,
    ),
    *for_readers(
        "manifest.json a symlink",
        _link(f"{RUN}/manifest.json", _outside_copy(f"{RUN}/manifest.json")),
        "symbolic link",
        ("verify", "download", "predict-run"),
        backends=LOCAL,
    ),
    *for_readers("a subfolder a symlink", _subfolder_link, "sub", ("verify",), backends=LOCAL),
    *for_readers("model.onnx a FIFO", _fifo(f"{RUN}/model.onnx"), "model.onnx", backends=LOCAL),
    *for_readers(
        "manifest.json a FIFO",
        _fifo(f"{RUN}/manifest.json"),
        "not a regular file",
        ("verify", "download", "predict-run"),
        backends=LOCAL,
    ),
    Case(
        "latest.json a FIFO [predict]",
        3,
        then(_fifo("latest.json"), "predict", "{store}", "{image}"),
        "not a regular file",
        LOCAL,
    ),
    Case(
        "latest.json a FIFO [show]",
        3,
        then(_fifo("latest.json"), "runs", "show", "{store}", "latest"),
        "not a regular file",
        LOCAL,
    ),
    Case(
        "latest.json a symlink [predict]",
        3,
        then(_link("latest.json", _outside_copy("latest.json")), "predict", "{store}", "{image}"),
        "symbolic link",
        LOCAL,
    ),
    Case(
        "the run folder a symlink [show]",
        3,
        then(
            lambda c: (
                shutil.move(Path(c.uri) / RUN, c.tmp / "moved"),
                (Path(c.uri) / RUN).symlink_to(c.tmp / "moved"),
            ),
            "runs",
            "show",
            "{store}",
            RUN,
        ),
        "holds no run",
        LOCAL,
    ),
]

# ------------------------------------------------------------------------------------ publish into a store


def _publish_with(mutate: Callable[[Path], None], lock: Callable[[TamperedStore], None] | None = None):
    def build(c: TamperedStore) -> list[str]:
        run = c.tmp / "incoming" / "new-run"
        shutil.copytree(c.tmp / "template", run)
        mutate(run)
        if lock:
            lock(c)
        return ["publish", str(run), c.uri]

    return build


def _lock(kind: str):
    def make(c: TamperedStore):
        lock = Path(c.uri) / ".latest.lock"
        lock.unlink(missing_ok=True)
        if kind == "symlink":
            lock.symlink_to(c.tmp / "outside-created-by-lock")
        elif kind == "fifo":
            os.mkfifo(lock)
        else:
            lock.mkdir()

    return make


def _swap_for_link(name: str):
    def mutate(run: Path):
        (run.parent / "secret.txt").write_bytes((run / name).read_bytes())
        (run / name).unlink()
        (run / name).symlink_to(run.parent / "secret.txt")

    return mutate


PUBLISH = [
    Case(
        "publish: a file that is a symlink (same content)",
        3,
        _publish_with(_swap_for_link("metrics.json")),
        "not a regular file",
    ),
    Case("publish: model.onnx a symlink", 3, _publish_with(_swap_for_link("model.onnx")), "not a regular file"),
    Case("publish: a FIFO in the run folder", 3, _publish_with(lambda r: os.mkfifo(r / "pipe")), "pipe"),
    Case(
        "publish: a symlinked subfolder",
        3,
        _publish_with(lambda r: (r / "linked").symlink_to(r.parent)),
        "linked",
    ),
    Case(
        "publish: a same-size tamper",
        3,
        _publish_with(lambda r: (r / "model.onnx").write_bytes(flip((r / "model.onnx").read_bytes()))),
        "does not match its manifest",
    ),
    Case(
        "publish: manifest path '..'",
        3,
        _publish_with(
            lambda r: (r / "manifest.json").write_text(
                json.dumps({"run_id": "new-run", "files": [{"path": "../x", "bytes": 1, "sha256": "0" * 64}]})
            )
        ),
        "'..'",
    ),
    Case(
        "publish: .latest.lock a symlink",
        4,
        _publish_with(lambda r: None, _lock("symlink")),
        "not a regular file",
        LOCAL,
    ),
    Case("publish: .latest.lock a FIFO", 4, _publish_with(lambda r: None, _lock("fifo")), "not a regular file", LOCAL),
    Case("publish: .latest.lock a folder", 4, _publish_with(lambda r: None, _lock("dir")), ".latest.lock", LOCAL),
]

# ------------------------------------------------------------------------------------ download destinations


def _dest_file(c: TamperedStore):
    Path(c.dest).write_text("mine")


def _dest_full(c: TamperedStore):
    Path(c.dest).mkdir()
    (Path(c.dest) / "mine.txt").write_text("mine")


def _dest_under_file(c: TamperedStore):
    (c.tmp / "afile").write_text("")


DOWNLOADS = [
    Case(
        "download into an existing file",
        3,
        then(_dest_file, "runs", "download", "{store}", RUN, "{dest}"),
        "not an empty folder",
    ),
    Case(
        "download into a non-empty folder",
        3,
        then(_dest_full, "runs", "download", "{store}", RUN, "{dest}"),
        "not an empty folder",
    ),
    Case(
        "download under a file",
        4,
        lambda c: (_dest_under_file(c), ["runs", "download", c.uri, RUN, str(c.tmp / "afile" / "dest")])[1],
        "cannot create",
    ),
    Case("download a run that does not exist", 3, cmd("runs", "download", "{store}", "nope", "{dest}"), "holds no run"),
    Case("download run id '..'", 3, cmd("runs", "download", "{store}", "..", "{dest}"), "'..'"),
    Case("show run id with a slash", 3, cmd("runs", "show", "{store}", "a/b"), "single visible folder"),
]

# ------------------------------------------------------------------------------------ the model contract


def _contract(**knobs):
    def prepare(c: TamperedStore):
        model = contract_model(c.tmp / "broken.onnx", **knobs)
        c.put(f"{RUN}/model.onnx", model.read_bytes())
        run = c.tmp / "rewritten"
        shutil.copytree(c.tmp / "template", run)
        shutil.copy(model, run / "model.onnx")
        write_manifest(run, RUN)
        c.put(f"{RUN}/manifest.json", (run / "manifest.json").read_bytes())

    return prepare


CONTRACTS = {
    "3 class names, 2 outputs": dict(classes=2, class_names=CLASSES[:3]),
    "20 class names, 3 outputs": dict(classes=3, class_names=CLASSES * 2),
    "class names not JSON": dict(classes=3, class_names="[not json"),
    "class names empty": dict(classes=3, class_names=[]),
    "class names not strings": dict(classes=3, class_names=[1, 2, 3]),
    "input misnamed": dict(classes=3, class_names=CLASSES[:3], input_name="input"),
    "input float": dict(classes=3, class_names=CLASSES[:3], input_type=1),
    "output misnamed": dict(classes=3, class_names=CLASSES[:3], output_name="logits"),
}
CONTRACT_CASES = [
    Case(f"contract: {label} [predict]", 8, then(_contract(**knobs), "predict", "{run}", "{image}"), "contract")
    for label, knobs in CONTRACTS.items()
] + [
    Case(f"contract: {label} [node-run]", 8, then(_contract(**knobs), *NODE["node-run"]), "contract", ("local",))
    for label, knobs in CONTRACTS.items()
]


def _bare(make: Callable[[TamperedStore], Path]):
    return lambda c: ["predict", str(make(c)), c.image]


def _bare_fifo(c: TamperedStore) -> Path:
    os.mkfifo(c.tmp / "pipe.onnx")
    return c.tmp / "pipe.onnx"


def _bare_dir(c: TamperedStore) -> Path:
    (c.tmp / "folder.onnx").mkdir()
    return c.tmp / "folder.onnx"


BARE = [
    Case("bare model a FIFO", 8, _bare(_bare_fifo), "not a regular file", LOCAL),
    Case(
        "bare model /dev/zero",
        8,
        _bare(lambda c: Path("/dev/zero.onnx") if False else Path("/dev/zero")),
        "not found",
        LOCAL,
    ),
    Case("bare model a folder", 8, _bare(_bare_dir), "not a regular file", LOCAL),
    Case("bare model missing", 8, _bare(lambda c: c.tmp / "none.onnx"), "not found", LOCAL),
    Case(
        "bare model a symlink",
        8,
        _bare(lambda c: (c.tmp / "l.onnx").symlink_to(c.tmp / "template" / "model.onnx") or c.tmp / "l.onnx"),
        "symbolic link",
        LOCAL,
    ),
    Case("node: bare model a FIFO", 8, lambda c: ["node", str(_bare_fifo(c)), c.image], "not a regular file", LOCAL),
    Case("node: bare model /dev/zero", 8, lambda c: ["node", "/dev/zero", c.image], "not a regular file", LOCAL),
    Case(
        "node: model.onnx a symlink",
        8,
        then(_link(f"{RUN}/model.onnx", _outside_copy(f"{RUN}/model.onnx")), *NODE["node-run"]),
        "symbolic link",
        LOCAL,
    ),
    Case("bare s3 model missing", 8, lambda c: ["predict", f"{c.uri}/none.onnx", c.image], "not found", ("s3",)),
]

# ------------------------------------------------------------------------------------ flags and endpoints

FLAGS = [
    Case("--out ''", 2, lambda c: ["train", "--print-config", "--out", ""], "out", LOCAL),
    Case("JOB_OUT=''", 2, lambda c: ["train", "--print-config"], "out", LOCAL, env={"JOB_OUT": ""}),
    Case("--out s3://b/a/../b", 2, lambda c: ["train", "--print-config", "--out", "s3://bkt/a/../b"], "'..'", LOCAL),
    Case("--out s3://b/a//b", 2, lambda c: ["train", "--print-config", "--out", "s3://bkt/a//b"], "empty", LOCAL),
    Case(
        "--checkpoint-dir s3://b/../x",
        2,
        lambda c: ["train", "--print-config", "--checkpoint-dir", "s3://bkt/../x"],
        "'..'",
        LOCAL,
    ),
    Case("predict --threads -5", 2, cmd("predict", "{run}", "{image}", "--threads", "-5"), "threads", LOCAL),
    Case("predict --batch-size 0", 2, cmd("predict", "{run}", "{image}", "--batch-size", "0"), "batch-size", LOCAL),
    Case("runs list: not a folder", 3, lambda c: ["runs", "list", str(c.tmp / "nowhere")], "not a folder", LOCAL),
]


def _unreachable(*args: str):
    return lambda c: [a.replace("{uri}", "s3://some-bucket/team") for a in args]


UNREACHABLE_ENV = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_MAX_ATTEMPTS": "1"}
ENDPOINTS = [
    Case(f"S3 endpoint unreachable [{' '.join(a[:2])}]", 4, _unreachable(*a), "unreachable", ("s3",), UNREACHABLE_ENV)
    for a in (
        ("runs", "list", "{uri}"),
        ("runs", "verify", "{uri}"),
        ("runs", "show", "{uri}", "x"),
        ("predict", "{uri}", "/dev/null"),
        ("predict", "{uri}/model.onnx", "/dev/null"),
    )
] + [
    Case(
        f"S3 bucket missing [{' '.join(a[:2])}]",
        4,
        lambda c, a=a: [x.replace("{uri}", "s3://no-such-bkt/x") for x in a],
        "bucket does not exist",
        ("s3",),
    )
    for a in (("runs", "list", "{uri}"), ("runs", "verify", "{uri}"), ("predict", "{uri}", "/dev/null"))
]

# ------------------------------------------------------------------------------------ secrets

SECRET_URI = f"http://user:{CANARY}@127.0.0.1:9"
FAKE_KEYS = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_MAX_ATTEMPTS": "1"}


def _with_secret_endpoint(c: TamperedStore, *flag: str) -> list[str]:
    return ["train", *flag, "--out", c.uri, "--s3-endpoint", SECRET_URI, "--s3-retries", "1"]


SECRETS = [
    Case(
        "secret in --s3-endpoint",
        4,
        lambda c: ["train", "--out", "s3://bkt/p", "--s3-endpoint", SECRET_URI, "--s3-retries", "1"],
        "unreachable",
        LOCAL,
        FAKE_KEYS,
    ),
    Case(
        "secret in JOB_S3_ENDPOINT",
        4,
        lambda c: ["train", "--out", "s3://bkt/p", "--s3-retries", "1"],
        "unreachable",
        LOCAL,
        {**FAKE_KEYS, "JOB_S3_ENDPOINT": SECRET_URI},
    ),
    Case(
        "secret in AWS_ENDPOINT_URL [runs list]",
        4,
        lambda c: ["runs", "list", "s3://bkt/p"],
        "unreachable",
        LOCAL,
        {**FAKE_KEYS, "AWS_ENDPOINT_URL": SECRET_URI},
    ),
    Case(
        "secret in AWS_ENDPOINT_URL [predict]",
        4,
        lambda c: ["predict", "s3://bkt/p", c.image],
        "unreachable",
        LOCAL,
        {**FAKE_KEYS, "AWS_ENDPOINT_URL": SECRET_URI},
    ),
    Case("secret in --mlflow", 4, lambda c: ["train", "--out", c.uri, "--mlflow", SECRET_URI], "MLflow", LOCAL),
    Case(
        "secret in MLFLOW_TRACKING_URI",
        4,
        lambda c: ["train", "--out", c.uri],
        "MLflow",
        LOCAL,
        {"MLFLOW_TRACKING_URI": SECRET_URI},
    ),
    Case("secret in JOB_MLFLOW", 4, lambda c: ["train", "--out", c.uri], "MLflow", LOCAL, {"JOB_MLFLOW": SECRET_URI}),
    Case(
        "secret as a token in the query",
        4,
        lambda c: ["train", "--out", c.uri, "--mlflow", f"http://127.0.0.1:9/?token={CANARY}"],
        "MLflow",
        LOCAL,
    ),
    Case(
        "secret in --data's endpoint",
        3,
        lambda c: _with_secret_endpoint(c, "--data", "s3://bkt/d.tar.gz"),
        "unreachable",
        LOCAL,
        FAKE_KEYS,
    ),
    Case(
        "secret in --checkpoint-dir's endpoint",
        4,
        lambda c: _with_secret_endpoint(c, "--checkpoint-dir", "s3://bkt/ck"),
        "unreachable",
        LOCAL,
        FAKE_KEYS,
    ),
]

# ------------------------------------------------------------------------------------ what arrives (S3 faults)

_PROXIES: list = []  # fault proxies started by the rows below; closed after each test


def _proxy(c: TamperedStore, **faults) -> str:
    """A FaultProxy in front of the test server; its endpoint."""
    from s3_server import FaultProxy

    proxy = FaultProxy(c.env["AWS_ENDPOINT_URL"], **faults)
    _PROXIES.append(proxy)
    return proxy.endpoint


def _publish_via(**faults):
    """`publish` of a new run to the store through a proxy injecting `faults` (2 retries)."""

    def build(c: TamperedStore) -> list[str]:
        c.env["JOB_S3_RETRIES"] = "2"
        return [*_publish_with(lambda r: write_manifest(r, "new-run"))(c), "--s3-endpoint", _proxy(c, **faults)]

    return build


def _read_via(reader: str, **faults):
    """A reader of the store whose every request goes through a proxy injecting `faults`."""
    run = cmd(*READERS[reader])

    def build(c: TamperedStore) -> list[str]:
        c.env["AWS_ENDPOINT_URL"] = _proxy(c, **faults)
        return run(c)

    return build


S3 = ("s3",)
CUT = {"truncate_get": 1000}  # every object GET: the full Content-Length announced, half the body sent
UPLOADS = [
    Case(
        "publish: model.onnx corrupted in transit (one byte)",
        4,
        _publish_via(corrupt_put=1, match="new-run/model.onnx"),
        "did not arrive intact",
        S3,
    ),
    Case(
        "publish: manifest.json corrupted in transit",
        4,
        _publish_via(corrupt_put=1, match="new-run/manifest.json"),
        "did not arrive intact",
        S3,
    ),
    Case(
        "publish: corrupted in transit, ETag of the bytes sent answered",
        4,
        _publish_via(corrupt_put=1, keep_etag=True, match="new-run/metrics.json"),
        "did not arrive intact",
        S3,
    ),
    Case(
        "publish: PUT answered 200 with an ETag, nothing stored",
        4,
        _publish_via(fake_put=1, match="new-run/model.int8.onnx"),
        "did not arrive intact",
        S3,
    ),
    Case(
        "publish: read-back body cut short every time",
        4,
        _publish_via(truncate_get=1000, match="new-run/"),
        "cut short",
        S3,
    ),
    Case(
        "publish: read-back body one byte short, Content-Length to match",
        4,
        _publish_via(short_get=1, match="new-run/model.onnx"),
        "did not arrive intact",
        S3,
    ),
    Case(
        "publish: latest.json read cut short every time",
        4,
        _publish_via(truncate_get=1000, match="latest.json"),
        "cut short",
        S3,
    ),
    *[
        Case(f"GET bodies cut short every time [{r}]", 4, _read_via(r, **CUT), "cut short", S3)
        for r in ("verify", "download", "predict-run", "predict-store", "export-serving")
    ],
    *[
        Case(
            f"model.onnx GET one byte short, Content-Length to match [{r}]",
            3,
            _read_via(r, short_get=1000, match="good/model.onnx"),
            "model.onnx",
            S3,
        )
        for r in ("verify", "download", "predict-run", "export-serving")
    ],
]

# ------------------------------------------------------------------------------------ export-serving destinations


def _export(
    dest: Callable[[TamperedStore], str], *extra: str, prepare: Callable[[TamperedStore], object] | None = None
):
    def build(c: TamperedStore) -> list[str]:
        if prepare:
            prepare(c)
        return ["runs", "export-serving", c.uri, RUN, dest(c), *extra]

    return build


def _s3_dest(c: TamperedStore) -> str:
    return f"s3://{c.bucket}/serving"


def _empty_folder(c: TamperedStore) -> Path:
    (c.tmp / "empty").mkdir(exist_ok=True)
    return c.tmp / "empty"


def _export_via(**faults):
    """export-serving to s3://bucket/serving with every request through a proxy injecting `faults`."""

    def build(c: TamperedStore) -> list[str]:
        c.env["AWS_ENDPOINT_URL"] = _proxy(c, **faults)
        return ["runs", "export-serving", c.uri, RUN, _s3_dest(c)]

    return build


EXPORTS = [
    Case(
        "export-serving: destination under a file",
        4,
        _export(lambda c: str(c.tmp / "afile" / "repo"), prepare=_dest_under_file),
        "cannot create",
    ),
    Case(
        "export-serving: destination a symlink to an empty folder",
        3,
        _export(lambda c: (c.tmp / "link").symlink_to(_empty_folder(c)) or str(c.tmp / "link")),
        "symbolic link",
    ),
    Case(
        "export-serving: destination an existing file", 3, _export(lambda c: c.dest, prepare=_dest_file), "not an empty"
    ),
    Case(
        "export-serving: destination a non-empty folder",
        3,
        _export(lambda c: c.dest, prepare=_dest_full),
        "not an empty",
    ),
    Case("export-serving: destination is the store", 2, _export(lambda c: c.uri), "inside the store"),
    Case("export-serving: destination inside the store", 2, _export(lambda c: f"{c.uri}/serving"), "inside the store"),
    Case(
        "export-serving: destination inside the run folder",
        2,
        _export(lambda c: f"{c.uri}/{RUN}/repo"),
        "inside the store",
        LOCAL,
    ),
    Case(
        "export-serving: destination a symlink into the store",
        2,
        _export(lambda c: (c.tmp / "link").symlink_to(c.uri) or str(c.tmp / "link" / "repo")),
        "inside the store",
        LOCAL,
    ),
    Case(
        "export-serving: S3 destination holds a stale model version",
        3,
        _export(_s3_dest, prepare=lambda c: c.client.put_object(Bucket=c.bucket, Key="serving/cifar10/2/x", Body=b"x")),
        "holds objects already",
        S3,
    ),
    Case(
        "export-serving: S3 upload corrupted in transit",
        4,
        _export_via(corrupt_put=1, match="/serving/"),
        "did not arrive intact",
        S3,
    ),
    Case(
        "export-serving: S3 PUT of config.pbtxt answered 200, nothing stored",
        4,
        _export_via(fake_put=1, match="config.pbtxt"),
        "were removed",
        S3,
    ),
    Case(
        "export-serving: S3 read-back cut short every time",
        4,
        _export_via(truncate_get=1000, match="/serving/"),
        "cut short",
        S3,
    ),
    *[
        Case(f"export-serving: --name {label}", 2, _export(lambda c: c.dest, "--name", name), "--name", LOCAL)
        for label, name in {
            "65 characters": "m" * 65,
            "10,000 characters": "m" * 10_000,
            "with a slash": "a/b",
            "'..'": "..",
            "hidden": ".hidden",
            "non-ASCII letters": "modèle",
            "empty": "",
            "with a newline and a workflow command": "x\n::error::forged",
            "with an escape sequence": "x\x1b[2J",
        }.items()
    ],
    Case(
        "download into a symlink to an empty folder",
        3,
        lambda c: [
            "runs",
            "download",
            c.uri,
            RUN,
            (c.tmp / "link").symlink_to(_empty_folder(c)) or str(c.tmp / "link"),
        ],
        "symbolic link",
    ),
]

# ------------------------------------------------------------------------------------ the gates: JSON, class names, text
# Every JSON document passes one loader (size and depth bounded, no NaN), every list of class names one check, every
# text shown to a person one gate (job/gates/). Each row breaks one of them through one surface.

DEEP = b"[" * 100_000  # Python's C parser raises RecursionError on it; the gate answers with one line
DEEP_CLOSED = b"[" * 100_000 + b"]" * 100_000
DEEP_POINTER = b"[" * 60_000  # under latest.json's 64 KiB bound, so the depth bound answers


def _nested(levels: int):
    value: object = "x"
    for _ in range(levels - 1):
        value = [value]
    return value


def _raw(name: str, data: bytes):
    return lambda c: c.put(name, data)


POINTER_READERS = {
    "predict": ("predict", "{store}", "{image}"),
    "show": ("runs", "show", "{store}", "latest"),
    "download": ("runs", "download", "{store}", "latest", "{dest}"),
    "verify": ("runs", "verify", "{store}", "latest"),
}
JSON_GATE = [
    *[
        Case(
            f"latest.json nested 60,000 deep [{r}]", 3, then(_raw("latest.json", DEEP_POINTER), *a), "nested more than"
        )
        for r, a in POINTER_READERS.items()
    ],
    Case(
        "latest.json 30,000 closed brackets [show]",
        3,
        then(_raw("latest.json", b"[" * 30_000 + b"]" * 30_000), *POINTER_READERS["show"]),
        "nested more than",
    ),
    Case(
        "latest.json valid but 33 levels deep [predict]",
        3,
        then(lambda c: c.pointer({"run_id": RUN, "x": _nested(33)}), *POINTER_READERS["predict"]),  # object + 32 lists
        "nested more than 32",
    ),
    Case(
        "latest.json with NaN [show]",
        3,
        then(_raw("latest.json", b'{"run_id": "good", "test_accuracy": NaN}'), *POINTER_READERS["show"]),
        "not valid JSON",
    ),
    Case(
        "latest.json over 64 KiB [predict]",
        3,
        then(lambda c: c.pointer({"run_id": RUN, "pad": "x" * 70_000}), *POINTER_READERS["predict"]),
        "over the 65,536-byte limit",
    ),
    Case(
        "latest.json not UTF-8 [show]",
        3,
        then(_raw("latest.json", b'{"run_id": "\xff\xfe"}'), *POINTER_READERS["show"]),
        "not valid JSON",
    ),
    *for_readers(
        "manifest nested 100,000 deep",
        _raw(f"{RUN}/manifest.json", DEEP),
        "nested more than",
        ("verify", "download", "predict-run", "export-serving"),
    ),
    *for_readers(
        "manifest 100,000 closed brackets", _raw(f"{RUN}/manifest.json", DEEP_CLOSED), "nested more than", ("verify",)
    ),
    *for_readers(
        "manifest valid but 40 levels deep",
        lambda c: c.manifest(lambda m: m.update(x=_nested(40))),
        "nested more than 32",
        ("verify", "predict-run"),
    ),
    *for_readers("manifest bytes NaN", _raw(f"{RUN}/manifest.json", b'{"files": [{"bytes": NaN}]}'), "not valid JSON"),
    *for_readers(
        "manifest over 16 MiB",
        lambda c: c.manifest(lambda m: m.update(pad="x" * (17 * 1024 * 1024))),
        "over the 16,777,216-byte limit",
        ("verify",),
        backends=LOCAL,
    ),
    Case(
        "metrics.json nested 100,000 deep [show]",
        3,
        then(_raw(f"{RUN}/metrics.json", DEEP), "runs", "show", "{store}", RUN),
        "nested more than",
    ),
    Case(
        "metrics.json a list [show]",
        3,
        then(_raw(f"{RUN}/metrics.json", b"[1]"), "runs", "show", "{store}", RUN),
        "expected a JSON object",
    ),
]

# A model's class names: labels.txt lines (export-serving), `predict --json` keys, log lines, the page. Each row is a
# 3-output contract model whose metadata breaks one rule of the class-name gate.
CLASS_NAMES = {
    "a line break (forges an error line)": (["cat", "dog\nerror: data error: forged", "eel"], "line-break"),
    "a carriage return": (["cat", "dog\rforged", "eel"], "line-break"),
    "an escape sequence": (["cat", "\x1b[2Jdog", "eel"], "line-break"),
    "a C1 control (CSI)": (["cat", "dog\x9b2J", "eel"], "line-break"),
    "U+2028": (["cat", "dog\u2028eel", "fox"], "line-break"),
    "a NUL": (["cat", "dog\x00", "eel"], "line-break"),
    "a bidi override": (["cat", "dog\u202egnp.exe", "eel"], "format character"),
    "a zero-width joiner": (["cat", "d\u200dog", "eel"], "format character"),
    "a duplicate": (["cat", "cat", "eel"], "are the same name"),
    "a duplicate by case": (["cat", "CAT", "eel"], "are the same name"),
    "a duplicate after NFC": (["caf\u00e9", "cafe\u0301", "eel"], "are the same name"),
    "leading white space": ([" cat", "dog", "eel"], "white space"),
    "an empty name": (["", "dog", "eel"], "empty"),
    "65 characters": (["c" * 65, "dog", "eel"], "longer than 64"),
    "1001 names": ([f"c{i}" for i in range(1001)], "over the limit of 1000"),
    "nested 100,000 deep": (DEEP_CLOSED.decode(), "nested more than"),
    "NaN": ('[NaN, "dog", "eel"]', "not valid JSON"),
    "an object": ('{"0": "cat"}', "non-empty list"),
    "a 300 KB document": (json.dumps(["cat", "dog", "eel" + "x" * 300_000]), "over the"),
    "2 names for 3 outputs": (["cat", "dog"], "2 class names for 3 model outputs"),
}
CLASS_NAME_EXPORTS = ("a line break (forges an error line)", "a duplicate", "nested 100,000 deep")
CLASS_NAME_CASES = [
    *[
        Case(
            f"class names: {label} [predict]", 8, then(_contract(classes=3, class_names=n), *READERS["predict-run"]), s
        )
        for label, (n, s) in CLASS_NAMES.items()
    ],
    *[
        Case(
            f"class names: {label} [node-run]",
            8,
            then(_contract(classes=3, class_names=n), *NODE["node-run"]),
            s,
            LOCAL,
        )
        for label, (n, s) in CLASS_NAMES.items()
    ],
    *[
        Case(
            f"class names: {label} [export-serving]",
            8,
            then(_contract(classes=3, class_names=CLASS_NAMES[label][0]), *READERS["export-serving"]),
            CLASS_NAMES[label][1],
        )
        for label in CLASS_NAME_EXPORTS
    ],
]

# Text that reaches a terminal or a CI log: names read from a store or given on the command line, with line breaks,
# escape sequences and workflow commands. The row asserts its one error line; every row of the table asserts that
# nothing forged a line (test below: no workflow command, no escape sequence, no raw control in any output).
TEXT_GATE = [
    Case(
        "latest.json run_id a workflow command [show]",
        3,
        then(lambda c: c.pointer({"run_id": "::stop-commands::tok3n"}), *POINTER_READERS["show"]),
        "holds no run",
    ),
    Case(
        "latest.json run_id a legacy workflow command [predict]",
        3,
        then(lambda c: c.pointer({"run_id": "##[error]forged"}), *POINTER_READERS["predict"]),
        "no manifest",
    ),
    Case("run id a workflow command [show]", 3, cmd("runs", "show", "{store}", "::error::forged"), "holds no run"),
    Case(
        "run id with a line break and an escape [download]",
        3,
        cmd("runs", "download", "{store}", "x\x1b[2J\nerror: forged", "{dest}"),
        "control character",
    ),
    Case(
        "store path with an escape sequence [runs list]",
        3,
        lambda c: ["runs", "list", str(c.tmp / "no\x1b]8;;http://evil\x07where")],
        "not a folder",
        LOCAL,
    ),
    Case(
        "store path with a line break [runs verify]",
        3,
        lambda c: ["runs", "verify", str(c.tmp / "no\nerror: storage error: forged")],
        "not a folder",
        LOCAL,
    ),
    Case(
        "image name with a line break and a workflow command [predict]",
        3,
        lambda c: ["predict", c.run_uri(), str(c.tmp / "x\n::error::forged.png")],
        ":\\x3aerror:\\x3aforged",  # the one error line, the name escaped
    ),
    Case(
        "image name with a bidi override [predict]",
        3,
        lambda c: ["predict", c.run_uri(), str(c.tmp / "cat\u202egnp.exe")],
        "\\u202e",
    ),
    Case(
        "manifest path a workflow command [verify]",
        3,
        then(
            lambda c: c.manifest(
                lambda m: m["files"].append({"path": "::error::forged", "bytes": 1, "sha256": "0" * 64})
            ),
            *READERS["verify"],
        ),
        "listed but missing",
    ),
]


ALL = (
    MANIFEST_PATHS
    + MANIFEST_SHAPES
    + CONTENT
    + _pointer_cases()
    + LINKS
    + PUBLISH
    + DOWNLOADS
    + CONTRACT_CASES
    + BARE
    + FLAGS
    + ENDPOINTS
    + SECRETS
    + UPLOADS
    + EXPORTS
    + JSON_GATE
    + CLASS_NAME_CASES
    + TEXT_GATE
)
PARAMS = [pytest.param(case, backend, id=f"{case.name} ({backend})") for case in ALL for backend in case.backends]


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(autouse=True)
def _close_proxies():
    yield
    while _PROXIES:
        _PROXIES.pop().close()


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A finished run folder: a contract model (10 classes), its INT8 twin, metrics, card, manifest."""

    def model(path: Path) -> None:
        contract_model(path, classes=3, class_names=CLASSES[:3], run_id=RUN)

    files = {
        "model.onnx": model,
        "model.int8.onnx": model,
        "metrics.json": json.dumps({"run_id": RUN, "test_accuracy": 0.5, "finished_at": "2026-12-01"}),
        "MODEL_CARD.md": "# Model card: run `good`\n",
    }
    return make_run_dir(tmp_path_factory.mktemp("template"), RUN, run_id=RUN, files=files)


@pytest.fixture
def ctx(request, template, tmp_path, monkeypatch):

    backend = request.node.callspec.params["backend"]
    shutil.copytree(template, tmp_path / "template")
    Image.fromarray(class_image(3, np.random.default_rng(0))).save(tmp_path / "cat.png")
    if backend == "local":
        c = TamperedStore(backend, tmp_path, str(tmp_path / "store"), {})
    else:
        bucket, s3_env = request.getfixturevalue("bucket"), request.getfixturevalue("s3_env")
        client = request.getfixturevalue("s3_client")  # the one that made the bucket
        c = TamperedStore(backend, tmp_path, f"s3://{bucket}/team", dict(s3_env), bucket, client)
    publish_folder(template, c.uri, RUN)
    return c


@pytest.mark.parametrize("case,backend", PARAMS)
def test_a_hostile_store_ends_in_its_documented_state(case, backend, ctx):
    args = case.build(ctx)
    if args[0] == "node":
        if not (NODE_DIR / "node_modules").is_dir() or not shutil.which("node"):
            needs(False, "the Node.js consumer", "npm ci in examples/node", installer="npm")
        command = ["node", str(NODE_DIR / "classify.mjs"), *args[1:]]
    before = ctx.snapshot()
    env = job_env(**{**ctx.env, **(case.env or {})})
    if args[0] == "node":
        proc = subprocess.run(
            command, capture_output=True, text=True, env=env, cwd=ROOT, stdin=subprocess.DEVNULL, timeout=60
        )
    else:
        proc, _ = run_forked(args, env=env, cwd=ROOT, timeout=60)
    print(f"{case.name} ({backend}): exit {proc.returncode}")
    assert proc.returncode == case.code, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert case.says in errors[0], errors[0]
    assert ctx.snapshot() == before  # nothing written anywhere, no partial download, the store unchanged
    assert CANARY not in proc.stdout + proc.stderr
    assert_nothing_forged(proc)


@pytest.mark.parametrize("backend", ["local"])
def test_predict_prints_hostile_class_names_escaped(backend, ctx):
    """Class names that are allowed but dangerous to print (workflow commands, markup) and an image named with a line
    break: the text lines are escaped one by one, the --json lines decode to the exact names."""
    names = ["::error::forged", "##[error]forged", "<b>bold</b>"]
    _contract(classes=3, class_names=names)(ctx)
    image = ctx.tmp / "x\n::stop-commands::tok.png"
    shutil.copy(ctx.image, image)
    text, _ = run_forked(["predict", ctx.run_uri(), str(image), "--top-k", "3"], env=job_env(), cwd=ROOT, timeout=60)
    as_json, _ = run_forked(["predict", ctx.run_uri(), str(image), "--json"], env=job_env(), cwd=ROOT, timeout=60)
    assert text.returncode == as_json.returncode == 0, text.stderr + as_json.stderr
    assert len(text.stdout.splitlines()) == 1 and len(as_json.stdout.splitlines()) == 1
    assert (
        ":\\x3aerror:\\x3aforged" in text.stdout
        and "#\\x23[error]forged" in text.stdout
        and "<b>bold</b>" in text.stdout
    )
    assert "x\\x0a:\\x3astop-commands:\\x3atok.png" in text.stdout
    record = json.loads(as_json.stdout)
    assert set(record["probabilities"]) == set(names) and record["input"] == str(image)
    assert_nothing_forged(text)
    assert_nothing_forged(as_json)


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_runs_list_survives_every_document_nested_100000_deep(backend, ctx):
    """`runs list` reports a store whatever its documents hold: latest.json, the run's manifest and its metrics.json
    each nested 100,000 deep give a row marked INCOMPLETE (exit 0), no traceback, nothing forged."""
    ctx.put("latest.json", DEEP_POINTER)
    ctx.put(f"{RUN}/manifest.json", DEEP)
    ctx.put(f"{RUN}/metrics.json", DEEP)
    env = job_env(**ctx.env)
    table, _ = run_forked(["runs", "list", ctx.uri], env=env, cwd=ROOT, timeout=60)
    rows, _ = run_forked(["runs", "list", ctx.uri, "--json"], env=env, cwd=ROOT, timeout=60)
    assert table.returncode == rows.returncode == 0, table.stderr + rows.stderr
    assert "Traceback" not in table.stderr + rows.stderr
    assert "INCOMPLETE" in table.stdout.splitlines()[1]
    (row,) = [json.loads(line) for line in rows.stdout.splitlines()]
    assert row["run_id"] == RUN and row["complete"] is False and row["latest"] is False
    assert_nothing_forged(table)
    assert_nothing_forged(rows)


def test_the_store_table_holds_every_class_of_fault():
    assert len(PARAMS) >= 120
    assert {c.code for c in ALL} == {2, 3, 4, 8}


# The comparison runs a row twice: rows whose fault proxy counts requests, or that leave a destination behind,
# would not fail the same way twice, so the sample comes from the read-only classes (Node.js rows are always
# subprocesses).
READ_ONLY = MANIFEST_PATHS + MANIFEST_SHAPES + CONTENT + LINKS + DOWNLOADS + CONTRACT_CASES + BARE + JSON_GATE
SAMPLE = [
    pytest.param(case, backend, id=f"{case.name} ({backend})")
    for case in READ_ONLY[::9]
    for backend in case.backends
    if "node" not in case.name
]


@pytest.mark.parametrize("case,backend", SAMPLE)
def test_forked_runner_matches_the_subprocess_runner(case, backend, ctx):
    """The table runs the CLI in a forked child (tests/forked.py); a sample of rows run both ways must end alike."""
    args = case.build(ctx)
    env = job_env(**{**ctx.env, **(case.env or {})})
    forked, _ = run_forked(args, env=env, cwd=ROOT, timeout=60)
    fresh, _ = run_fresh(args, env=env, cwd=ROOT, timeout=60)

    def ending(proc):  # what must agree: the code, the error line and the stdout events, less temp names and times
        text = re.sub(r"/tmp/[^/\s'\"]+", "/tmp/X", proc.stderr + proc.stdout)
        text = re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+Z?", "T", text)
        text = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", text)
        return proc.returncode, [line for line in text.splitlines() if line.startswith(("error:", "{"))]

    assert ending(forked) == ending(fresh), fresh.stderr[-2000:]

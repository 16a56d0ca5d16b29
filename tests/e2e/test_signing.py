"""Signed runs: model.sig (OpenSSF model-signing, made with the real model-signing library) and the readers that
require it. A table of hostile stores, each published whole (its manifest re-hashed, so that every reader accepts
it without a key: signing is opt-in), each refused with a trusted key by every reader (Python and Node, local and
S3): exit 3, one error line, nothing written. The upstream `model_signing` CLI verifies a signed run as is, without
network, and fails after any byte of any signed file changes.
"""

import datetime
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import (
    CLASSES,
    ROOT,
    class_image,
    contract_model,
    job_env,
    make_run_dir,
    needs,
    page_runs,
    publish_folder,
    run_job_forked,
    static_server,
    tree_snapshot,
)
from job.storage.manifest import write_manifest

RUN = "good"
PASSWORD = "pw-5ecret-77"
NODE_DIR = ROOT / "examples" / "node"
MODEL_SIGNING = Path(sys.executable).parent / "model_signing"


# ------------------------------------------------------------------------------------ keys and certificates


def _ec_key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key, path: Path, password: bytes | None = None) -> Path:
    from cryptography.hazmat.primitives import serialization as s

    enc = s.BestAvailableEncryption(password) if password else s.NoEncryption()
    path.write_bytes(key.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, enc))
    pub = path.with_suffix(".pub")
    pub.write_bytes(key.public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo))
    return path


def _cert(subject_key, subject: str, issuer_key, issuer: str, *, ca: bool, days=(-1, 365), signs: bool = True):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(subject_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + datetime.timedelta(days=days[0]))
        .not_valid_after(now + datetime.timedelta(days=days[1]))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=signs and not ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert, path: Path) -> Path:
    from cryptography.hazmat.primitives import serialization as s

    path.write_bytes(cert.public_bytes(s.Encoding.PEM))
    return path


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("keys")
    k = {"a": _write_key(_ec_key(), d / "a.pem"), "b": _write_key(_ec_key(), d / "b.pem")}
    k["encrypted"] = _write_key(_ec_key(), d / "encrypted.pem", PASSWORD.encode())
    ca_key, foreign_ca_key, leaf_key = _ec_key(), _ec_key(), _ec_key()
    k["ca"] = _pem(_cert(ca_key, "Team CA", ca_key, "Team CA", ca=True, days=(-30, 3650)), d / "ca.pem")
    k["leaf_key"] = _write_key(leaf_key, d / "leaf.pem")
    k["leaf"] = _pem(_cert(leaf_key, "trainer", ca_key, "Team CA", ca=False), d / "leaf.crt")
    k["expired"] = _pem(_cert(leaf_key, "trainer", ca_key, "Team CA", ca=False, days=(-30, -1)), d / "expired.crt")
    k["no_signing"] = _pem(_cert(leaf_key, "trainer", ca_key, "Team CA", ca=False, signs=False), d / "nosign.crt")
    k["foreign"] = _pem(_cert(leaf_key, "trainer", foreign_ca_key, "Team CA", ca=False), d / "foreign.crt")
    k["a_pub"], k["b_pub"] = k["a"].with_suffix(".pub"), k["b"].with_suffix(".pub")
    return k


# ------------------------------------------------------------------------------------ run folders


def _model(path: Path, classes: int = 3) -> Path:
    """A contract model every consumer loads (ONNX IR 8: onnxruntime-node reads it too)."""
    import onnx

    contract_model(path, classes=classes, class_names=CLASSES[:classes], run_id=RUN)
    model = onnx.load(path)
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    metrics = {"run_id": RUN, "test_accuracy": 0.5, "finished_at": "2026-12-01", "data": {"test_fingerprint": "f" * 64}}
    files = {"model.onnx": _model, "metrics.json": json.dumps(metrics), "MODEL_CARD.md": "# Model card: run `good`\n"}
    return make_run_dir(tmp_path_factory.mktemp("template"), RUN, run_id=RUN, files=files)


def sign(folder: Path, key: Path, certificate: Path | None = None, chain: Path | None = None) -> Path:
    """Sign a run folder in place with the job's own signer, then rewrite its manifest (as `job publish` does)."""
    from job.storage.signing import load_signer, sign_run

    (folder / "manifest.json").unlink(missing_ok=True)
    sign_run(folder, load_signer(str(key), certificate=str(certificate or ""), chain=str(chain or "")))
    write_manifest(folder, RUN)
    return folder


def rehash(folder: Path) -> Path:
    (folder / "manifest.json").unlink(missing_ok=True)
    write_manifest(folder, RUN)
    return folder


def _copy(template: Path, tmp: Path, name: str) -> Path:
    dest = tmp / "made" / name
    shutil.copytree(template, dest)
    return dest


def _signed(keys, tmp, template, name="signed") -> Path:
    return sign(_copy(template, tmp, name), keys["a"])


# Each builder makes a run folder (whole, its manifest matching its files) from the template.
def _rewritten_card(keys, tmp, template):
    run = _signed(keys, tmp, template)
    (run / "MODEL_CARD.md").write_text("# Model card: run `good` (edited)\n")
    return rehash(run)


def _model_swapped(keys, tmp, template):
    run = _signed(keys, tmp, template)
    _model(run / "model.onnx", classes=2)
    return rehash(run)


def _other_key(keys, tmp, template):
    return sign(_copy(template, tmp, "other"), keys["b"])


def _unsigned(keys, tmp, template):
    return _copy(template, tmp, "unsigned")


def _sig_bytes(change: Callable[[bytes], bytes]):
    def build(keys, tmp, template):
        run = _signed(keys, tmp, template)
        (run / "model.sig").write_bytes(change((run / "model.sig").read_bytes()))
        return rehash(run)

    return build


def _extra_file(keys, tmp, template):
    run = _signed(keys, tmp, template)
    (run / "extra.txt").write_text("added after signing\n")
    return rehash(run)


def _sig_of_other_files(keys, tmp, template):
    """A genuine model.sig by the trusted key, made over another set of files (one more file), moved in."""
    other = _copy(template, tmp, "other-set")
    (other / "notes.txt").write_text("x")
    sign(other, keys["a"])
    run = _copy(template, tmp, "target")
    shutil.copy(other / "model.sig", run / "model.sig")
    return rehash(run)


def _other_run_moved_in(keys, tmp, template):
    """Another run, signed by the trusted key (its signed metrics.json names it), moved into this run's folder
    with the manifest re-computed (naming this run): every digest matches, the signature verifies."""
    other = _copy(template, tmp, "other-run")
    metrics = json.loads((other / "metrics.json").read_text())
    (other / "metrics.json").write_text(json.dumps({**metrics, "run_id": "other"}))
    return rehash(sign(other, keys["a"]))


def _other_run_without_run_id(keys, tmp, template):
    """Another run signed by the trusted key over a smaller file set (no metrics.json, no provenance.json),
    moved in; this run's metrics.json deleted, the manifest re-computed: the signed set is the manifest's."""
    other = _copy(template, tmp, "smaller-set")
    (other / "metrics.json").unlink()
    return rehash(sign(other, keys["a"]))


def _manifest_changes_between_reads(change: Callable[[Path], None]):
    """A signed run whose content is then changed and its manifest re-computed; the signed manifest is kept
    beside it (made/signed-manifest.json) for the S3 proxy to serve on the first GETs of manifest.json: a store
    whose manifest changes between a reader's reads (the signature check sees the signed one, a later read the
    re-hashed one)."""

    def build(keys, tmp, template):
        run = _signed(keys, tmp, template)
        (run.parent / "signed-manifest.json").write_bytes((run / "manifest.json").read_bytes())
        change(run)
        return rehash(run)

    return build


def _swap_model(run: Path) -> None:
    _model(run / "model.onnx", classes=2)


def _change_metrics(run: Path) -> None:
    metrics = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps({**metrics, "test_accuracy": 0.99}))


def _missing_file(keys, tmp, template):
    run = _signed(keys, tmp, template)
    (run / "MODEL_CARD.md").unlink()
    return rehash(run)


def _cert_signed(which: str):
    def build(keys, tmp, template):
        return sign(_copy(template, tmp, f"cert-{which}"), keys["leaf_key"], keys[which], keys["ca"])

    return build


def _key_signed_for_cert(keys, tmp, template):
    return _signed(keys, tmp, template)


@dataclass
class Hostile:
    name: str
    build: Callable
    trust: str = "key"  # "key": --public-key a.pub; "cert": --trust-certificate ca.pem
    readers: tuple[str, ...] = ()  # () = every reader
    backends: tuple[str, ...] = ()  # () = local, plus S3 for the ON_S3 cases
    swap_manifest: bool = False  # S3 only: the first manifest GETs (those of the signature check) get the signed one
    says: tuple[str, ...] = ("model.sig", "sign")  # the error line names one of these


HOSTILE = [
    Hostile("content rewritten, manifest re-hashed", _rewritten_card),
    Hostile("model.onnx swapped, manifest re-hashed", _model_swapped),
    Hostile("re-signed with another key", _other_key),
    Hostile("unsigned run", _unsigned),
    Hostile("model.sig truncated", _sig_bytes(lambda b: b[: len(b) // 2])),
    Hostile("model.sig not JSON", _sig_bytes(lambda b: b"not json at all")),
    Hostile("model.sig a JSON list", _sig_bytes(lambda b: b"[1, 2]")),
    Hostile("model.sig signature bytes changed", _sig_bytes(lambda b: b.replace(b'"sig":"M', b'"sig":"N', 1))),
    Hostile("a file added after signing", _extra_file),
    Hostile("a signed file removed", _missing_file),
    Hostile("a signature over another file set", _sig_of_other_files),
    Hostile("expired certificate", _cert_signed("expired"), "cert"),
    Hostile("certificate of a foreign CA", _cert_signed("foreign"), "cert"),
    Hostile("a bare-key signature where a CA is trusted", _key_signed_for_cert, "cert"),
    Hostile(
        "another signed run moved in (another run id)",
        _other_run_moved_in,
        readers=(
            "verify",
            "download",
            "predict-run",
            "predict-store",
            "export-serving",
            "baseline",
            "node-run",
            "node-store",
        ),
    ),
    Hostile(
        "another signed run moved in (no signed run id)",
        _other_run_without_run_id,
        readers=("verify", "download", "predict-run", "predict-store", "export-serving", "node-run", "node-store"),
    ),
    Hostile(
        "manifest swapped between reads: model.onnx",
        _manifest_changes_between_reads(_swap_model),
        readers=("verify", "download", "predict-run", "predict-store", "export-serving"),
        backends=("s3",),
        swap_manifest=True,
        says=("manifest", "sign"),
    ),
    Hostile(
        "manifest swapped between reads: metrics.json",
        _manifest_changes_between_reads(_change_metrics),
        readers=("verify", "baseline"),
        backends=("s3",),
        swap_manifest=True,
        says=("manifest", "sign"),
    ),
]

READERS = {
    "verify": ("runs", "verify", "{store}", RUN),
    "download": ("runs", "download", "{store}", RUN, "{dest}"),
    "predict-run": ("predict", "{run}", "{image}"),
    "predict-store": ("predict", "{store}", "{image}"),
    "export-serving": ("runs", "export-serving", "{store}", RUN, "{dest}"),
    "baseline": ("train", "--baseline", "{run}", "--data", "{missing}", "--out", "{out}"),
    "node-run": ("node", "{run}", "{image}"),
    "node-store": ("node", "{store}", "{image}"),
}
PYTHON_READERS = [r for r in READERS if not r.startswith("node")]


@dataclass
class SignedStore:
    """One store (local folder or s3://bucket/team) holding the signed run under test, and each reader's arguments."""

    backend: str
    tmp: Path
    uri: str
    env: dict

    def args(self, reader: str, trust_args: list[str]) -> list[str]:
        values = {
            "store": self.uri,
            "run": f"{self.uri}/{RUN}",
            "image": str(self.tmp / "cat.png"),
            "dest": str(self.tmp / "dest"),
            "missing": str(self.tmp / "no-data.tar.gz"),
            "out": str(self.tmp.parent / f"{self.tmp.name}-out"),
        }
        args = [a.format(**values) for a in READERS[reader]]
        return [*args[:1], *trust_args, *args[1:]] if reader.startswith("node") else [*args, *trust_args]

    def snapshot(self) -> dict:
        state = {"files": tree_snapshot(self.tmp)}
        if self.backend == "s3":
            from job.storage.s3client import make_client

            bucket = self.uri.split("/")[2]
            objs = make_client().list_objects_v2(Bucket=bucket).get("Contents", [])
            state["objects"] = {o["Key"]: o["ETag"] for o in objs}
        return state


def _publish(folder: Path, uri: str) -> None:
    publish_folder(folder, uri, RUN)


def _ctx(request, tmp_path, backend: str, folder: Path) -> SignedStore:
    tmp_path.mkdir(parents=True, exist_ok=True)
    Image.fromarray(class_image(3, np.random.default_rng(0))).save(tmp_path / "cat.png")
    if backend == "local":
        c = SignedStore(backend, tmp_path, str(tmp_path / "store"), {})
    else:
        bucket, s3_env = request.getfixturevalue("bucket"), request.getfixturevalue("s3_env")
        c = SignedStore(backend, tmp_path, f"s3://{bucket}/team", dict(s3_env))
    _publish(folder, c.uri)
    return c


def _run(ctx: SignedStore, reader: str, trust_args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    args = ctx.args(reader, trust_args)
    if args[0] == "node":
        if not (NODE_DIR / "node_modules").is_dir() or not shutil.which("node"):
            needs(False, "the Node.js consumer", "npm ci in examples/node", installer="npm")
        command = ["node", str(NODE_DIR / "classify.mjs"), *args[1:]]
        return subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=job_env(**{**ctx.env, **(env or {})}),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            timeout=120,
        )
    return run_job_forked(*args, env={**ctx.env, **(env or {})})


def _trust_args(keys, trust: str) -> list[str]:
    return ["--public-key", str(keys["a_pub"])] if trust == "key" else ["--trust-certificate", str(keys["ca"])]


ON_S3 = {"content rewritten, manifest re-hashed", "re-signed with another key", "unsigned run", "model.sig truncated"}


def _backends(case: Hostile, reader: str) -> tuple:
    """Every case on a local store; on the S3 server, the Python readers of the cases that differ in what is read."""
    if case.backends:
        return case.backends
    return ("local", "s3") if case.name in ON_S3 and not reader.startswith("node") else ("local",)


PARAMS = [
    pytest.param(case, reader, backend, id=f"{case.name} [{reader}] ({backend})")
    for case in HOSTILE
    for reader in READERS
    if not case.readers or reader in case.readers
    for backend in _backends(case, reader)
]


@pytest.mark.parametrize("case,reader,backend", PARAMS)
def test_a_hostile_signed_store_is_refused_with_a_key_and_read_without(
    case, reader, backend, keys, template, request, tmp_path
):
    folder = case.build(keys, tmp_path / "build", template)
    ctx = _ctx(request, tmp_path / "ctx", backend, folder)
    before = ctx.snapshot()
    proxy, reads = None, 0
    if case.swap_manifest:
        from s3_server import FaultProxy

        # The reader's manifest GETs before it hashes content: here_or_latest's look (a run folder given), then
        # the one read the signature is checked against. Each gets the signed manifest; any later GET the
        # re-hashed one. A reader that reads it once hashes the content against the signed copy.
        reads = 2 if "{run}" in READERS[reader] else 1
        proxy = FaultProxy(
            ctx.env["AWS_ENDPOINT_URL"],
            replace_get=reads,
            replace_body=(folder.parent / "signed-manifest.json").read_bytes(),
            match=f"/{RUN}/manifest.json",
        )
    try:
        key_env = {"AWS_ENDPOINT_URL": proxy.endpoint} if proxy else None
        proc = _run(ctx, reader, _trust_args(keys, case.trust), env=key_env)
    finally:
        if proxy:
            proxy.close()
    print(f"{case.name} [{reader}] ({backend}) with a key: exit {proc.returncode}: {proc.stderr.strip()[-300:]}")
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert any(word in errors[0] for word in case.says), errors[0]
    assert "no-data.tar.gz" not in errors[0], errors[0]  # refused before the baseline's job reads its data
    if proxy:  # the swap happened, and the manifest was not read again after the signature check
        assert proxy.injected == reads and proxy.seen["GET"] == reads, (proxy.injected, proxy.seen)
    assert ctx.snapshot() == before  # nothing loaded or written: no download, no repository, the store unchanged

    plain = _run(ctx, reader, [])  # signing is opt-in: the same store is read as before without a key
    if reader == "baseline":  # accepted: the job went on to read its (missing) data
        assert plain.returncode == 3 and "no-data.tar.gz" in plain.stderr, plain.stderr[-2000:]
    else:
        assert plain.returncode == 0, plain.stderr[-3000:]


GOOD = {"key-signed run": ("key", None), "certificate-signed run": ("cert", "leaf")}


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize("label", list(GOOD))
def test_a_signed_run_is_accepted_by_every_reader_with_its_key(label, reader, keys, template, request, tmp_path):
    trust, leaf = GOOD[label]
    folder = _cert_signed(leaf)(keys, tmp_path / "build", template) if leaf else _signed(keys, tmp_path, template)
    ctx = _ctx(request, tmp_path / "ctx", "local", folder)
    proc = _run(ctx, reader, _trust_args(keys, trust))
    if reader == "baseline":  # the baseline passed its signature check; the job then reads its (missing) data
        assert proc.returncode == 3 and "no-data.tar.gz" in proc.stderr, proc.stderr[-2000:]
    else:
        assert proc.returncode == 0, proc.stderr[-3000:]


def test_the_trusted_key_can_come_from_the_environment(keys, template, request, tmp_path):
    ctx = _ctx(request, tmp_path / "ctx", "local", _other_key(keys, tmp_path / "build", template))
    for reader in ("verify", "predict-run", "node-run"):
        proc = _run(ctx, reader, [], env={"JOB_TRUSTED_KEY": str(keys["a_pub"])})
        assert proc.returncode == 3 and "model.sig" in proc.stderr, (reader, proc.stderr[-2000:])


def test_a_trust_anchor_that_does_not_load_is_a_usage_error(keys, template, request, tmp_path):
    ctx = _ctx(request, tmp_path / "ctx", "local", _signed(keys, tmp_path, template))
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key")
    for reader in ("verify", "predict-run", "download", "node-run"):
        proc = _run(ctx, reader, ["--public-key", str(junk)])
        assert proc.returncode == 2, (reader, proc.stderr[-2000:])
    proc = _run(ctx, "verify", ["--public-key", str(keys["a"])])  # a private key is not a public key
    assert proc.returncode == 2, proc.stderr


def test_runs_list_shows_which_runs_are_signed(keys, template, tmp_path):
    store = tmp_path / "store"
    _publish(_signed(keys, tmp_path, template), str(store))
    unsigned = _copy(template, tmp_path, "plain")
    (unsigned / "manifest.json").write_text((unsigned / "manifest.json").read_text().replace(RUN, "plain"))
    rehash_as = unsigned
    (rehash_as / "manifest.json").unlink()
    write_manifest(rehash_as, "plain")
    publish_folder(unsigned, str(store), "plain", finished_at="2026-11-01T00:00:00Z")
    rows = {}
    for trust in ([], ["--public-key", str(keys["a_pub"])], ["--public-key", str(keys["b_pub"])]):
        proc = run_job_forked("runs", "list", str(store), "--json", *trust)
        assert proc.returncode == 0, proc.stderr
        rows[len(rows)] = {r["run_id"]: r["signature"] for r in map(json.loads, proc.stdout.splitlines())}
    assert rows[0] == {RUN: "signed", "plain": "unsigned"}
    assert rows[1] == {RUN: "verified", "plain": "REFUSED"}
    assert rows[2] == {RUN: "REFUSED", "plain": "REFUSED"}
    table = run_job_forked("runs", "list", str(store))
    assert "signature" in table.stdout.splitlines()[0] and "unsigned" in table.stdout


def test_runs_list_skips_a_folder_with_an_unsafe_name_and_says_so(keys, template, tmp_path):
    store = tmp_path / "store"
    _publish(_signed(keys, tmp_path, template), str(store))
    (store / "a\n::error::forged").mkdir()
    (store / "b\x1b[31mred").mkdir()
    for args in ([], ["--json"], ["--public-key", str(keys["a_pub"])]):
        proc = run_job_forked("runs", "list", str(store), *args)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert RUN in proc.stdout and "forged" not in proc.stdout, proc.stdout
        warnings = [line for line in proc.stderr.splitlines() if "unsafe name" in line]
        assert len(warnings) == 2 and any("forged" in w for w in warnings), proc.stderr
        for line in (proc.stdout + proc.stderr).splitlines():
            assert not line.startswith("::") and "\x1b" not in line, line


# ------------------------------------------------------------------------------------ the upstream CLI, offline


def _offline(*command: str) -> subprocess.CompletedProcess:
    """A command with no network: a new, empty network namespace (`unshare -n`, or -rn without root)."""
    for prefix in (["unshare", "-n"], ["unshare", "-rn"]):
        proc = subprocess.run([*prefix, "true"], capture_output=True)
        if proc.returncode == 0:
            return subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=120)
    pytest.skip("no network namespace can be made here (unshare -n)")


def _upstream_verify(run: Path, key: Path) -> subprocess.CompletedProcess:
    return _offline(
        str(MODEL_SIGNING),
        "verify",
        "key",
        str(run),
        "--signature",
        str(run / "model.sig"),
        "--public_key",
        str(key),
        "--ignore-paths",
        str(run / "manifest.json"),
    )


def test_the_upstream_cli_verifies_a_signed_run_offline_and_fails_after_any_change(keys, template, tmp_path):
    run = _signed(keys, tmp_path, template)
    ok = _upstream_verify(run, keys["a_pub"])
    assert ok.returncode == 0 and "Verification succeeded" in ok.stdout, ok.stdout + ok.stderr
    assert _upstream_verify(run, keys["b_pub"]).returncode != 0
    listed = [f["path"] for f in json.loads((run / "manifest.json").read_text())["files"] if f["path"] != "model.sig"]
    assert set(listed) == {"model.onnx", "metrics.json", "MODEL_CARD.md"}
    for name in listed:
        for at in (0, -1):  # the first and the last byte of every signed file
            copy = tmp_path / f"changed-{name}-{at}"
            shutil.copytree(run, copy)
            data = bytearray((copy / name).read_bytes())
            data[at] ^= 0x01
            (copy / name).write_bytes(bytes(data))
            proc = _upstream_verify(copy, keys["a_pub"])
            assert proc.returncode != 0, (name, at, proc.stdout)


# ------------------------------------------------------------------------------------ job publish --sign-key


def test_job_publish_signs_with_an_encrypted_key_and_leaves_the_folder_unchanged(keys, template, tmp_path):
    before = tree_snapshot(template)
    store = tmp_path / "store"
    args = ["publish", str(template), str(store), "--sign-key", str(keys["encrypted"])]
    proc = run_job_forked(*args, "--sign-key-password-env", "SIGN_PW", env={"SIGN_PW": PASSWORD})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert PASSWORD not in proc.stdout + proc.stderr
    assert tree_snapshot(template) == before
    assert _upstream_verify(store / RUN, keys["encrypted"].with_suffix(".pub")).returncode == 0
    from job.storage import open_store
    from job.storage.signing import load_trust, verify_run_signature

    info = verify_run_signature(store / RUN, load_trust(str(keys["encrypted"].with_suffix(".pub"))))
    assert info.method == "key" and set(info.files) == {"model.onnx", "metrics.json", "MODEL_CARD.md"}
    assert json.loads(proc.stdout.splitlines()[-1])["signed_by"] == info.key_fingerprint
    assert "model.sig" in open_store(str(store)).manifest(RUN)["files"]


def test_job_publish_with_a_certificate_and_an_encrypted_key_is_verified_by_the_ca(keys, template, tmp_path):
    from cryptography.hazmat.primitives import serialization as s

    enc = tmp_path / "leaf-enc.pem"
    leaf = s.load_pem_private_key(keys["leaf_key"].read_bytes(), None)
    enc.write_bytes(leaf.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.BestAvailableEncryption(b"pw")))
    store = tmp_path / "store"
    args = ["publish", str(template), str(store), "--sign-key", str(enc), "--sign-key-password-env", "PW"]
    args += ["--sign-certificate", str(keys["leaf"]), "--sign-chain", str(keys["ca"])]
    proc = run_job_forked(*args, env={"PW": "pw"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    upstream = _offline(
        str(MODEL_SIGNING),
        "verify",
        "certificate",
        str(store / RUN),
        "--signature",
        str(store / RUN / "model.sig"),
        "--certificate_chain",
        str(keys["ca"]),
        "--ignore-paths",
        str(store / RUN / "manifest.json"),
    )
    assert upstream.returncode == 0, upstream.stdout + upstream.stderr
    from job.storage.signing import load_trust, verify_run_signature

    info = verify_run_signature(store / RUN, load_trust(certificate=str(keys["ca"])))
    assert info.method == "certificate" and "trainer" in info.subject


@pytest.mark.parametrize(
    "flags,env,says",
    [
        (["--sign-key", "{missing}"], {}, "cannot be read"),
        (["--sign-key", "{junk}"], {}, "does not load"),
        (["--sign-key", "{encrypted}"], {}, "password"),
        (["--sign-key", "{encrypted}", "--sign-key-password-env", "PW"], {}, "not set"),
        (["--sign-key", "{encrypted}", "--sign-key-password-env", "PW"], {"PW": "wrong"}, "does not load"),
        (["--sign-key", "{a}", "--sign-certificate", "{leaf}"], {}, "not the certificate"),
        (["--sign-key", "{rsa}"], {}, "EC keys"),
        (["--sign-key", "{leaf_key}", "--sign-certificate", "{leaf}"], {}, "--sign-chain"),  # no chain: not a crash
        (["--sign-key", "{leaf_key}", "--sign-certificate", "{no_signing}", "--sign-chain", "{ca}"], {}, "signing"),
    ],
)
def test_a_signing_key_that_does_not_load_is_exit_2_before_anything_is_read(
    flags, env, says, keys, template, tmp_path, tiny_tar
):
    from cryptography.hazmat.primitives import serialization as s
    from cryptography.hazmat.primitives.asymmetric import rsa

    (tmp_path / "junk.pem").write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "rsa.pem").write_bytes(rsa_key.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption()))
    values = {k: str(v) for k, v in keys.items()}
    values.update(missing=str(tmp_path / "none.pem"), junk=str(tmp_path / "junk.pem"), rsa=str(tmp_path / "rsa.pem"))
    flags = [f.format(**values) for f in flags]
    for args in (
        ["train", "--data", str(tiny_tar), "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c"), *flags],
        ["publish", str(template), str(tmp_path / "pub"), *flags],
    ):
        proc = run_job_forked(*args, env=env)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert proc.returncode == 2 and len(errors) == 1 and says in errors[0], proc.stderr[-2000:]
        assert "stage data" not in proc.stderr and "Traceback" not in proc.stderr
        assert not (tmp_path / "out").exists() and not (tmp_path / "pub").exists() and not (tmp_path / "c").exists()


def test_the_public_verification_function_checks_content_too(keys, template, tmp_path):
    from job.errors import DataError
    from job.storage.signing import load_trust, verify_run_signature

    run = _signed(keys, tmp_path, template)
    trust = load_trust(str(keys["a_pub"]))
    assert verify_run_signature(run, trust).key_fingerprint == trust.fingerprint
    data = bytearray((run / "MODEL_CARD.md").read_bytes())
    data[0] ^= 1
    (run / "MODEL_CARD.md").write_bytes(bytes(data))  # the manifest is not re-hashed: content differs from it
    with pytest.raises(DataError, match="MODEL_CARD.md"):
        verify_run_signature(run, trust)
    os.environ.pop("JOB_TRUSTED_KEY", None)
    assert load_trust() is None


def test_the_readers_do_not_import_model_signing_without_a_key(template, tmp_path):
    code = (
        f"import sys, runpy; sys.argv = ['job', 'runs', 'verify', {str(template.parent)!r}];"
        "from job.cli import main; rc = main(sys.argv[1:]);"
        "assert 'model_signing' not in sys.modules and 'tensorflow' not in sys.modules; sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=job_env(), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_sha256_of_the_signature_is_what_the_manifest_lists(keys, template, tmp_path):
    run = _signed(keys, tmp_path, template)
    listed = {f["path"]: f["sha256"] for f in json.loads((run / "manifest.json").read_text())["files"]}
    assert listed["model.sig"] == hashlib.sha256((run / "model.sig").read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------ a real training run, signed

IMAGE = "registry.example/cifar10-job@sha256:" + "ab" * 32


@pytest.fixture(scope="module")
def signed_training(keys, tiny_tar, tmp_path_factory):
    """The module's one training: a real run with --sign-key whose key is gone when the run is signed, after
    training (exit 4, the finished run kept unsigned under the cache), then signed and published with `job publish
    --sign-key` (the command the error line names): a trained run, signed, without training again."""
    from helpers import start_job, train_args, wait_for_event

    base = tmp_path_factory.mktemp("signed-training")
    key = base / "vanishing.pem"
    shutil.copy(keys["a"], key)
    store, cache = base / "store", base / "cache"
    train = start_job(
        *train_args(tiny_tar, store, run_id="signed-1", cache=cache),
        "--sign-key",
        str(key),
        env={"CIFAR10_JOB_IMAGE": IMAGE},
    )
    try:
        wait_for_event(train, "epoch")
        key.unlink()  # loaded and checked before the data was read; gone when the run is signed, after training
        out, err = train.communicate(timeout=600)
    finally:
        train.kill()
    kept = cache / "unpublished" / "signed-1"
    unpublished = {
        "kept_manifest": (kept / "manifest.json").is_file(),
        "kept_sig": (kept / "model.sig").exists(),
        "store_run": (store / "signed-1").exists(),
        "store_latest": (store / "latest.json").exists(),
    }
    proc = run_job_forked("publish", str(kept), str(store), "--sign-key", str(keys["a"]))
    return {
        "run": store / "signed-1",
        "train": (train.returncode, out, err),
        "unpublished": unpublished,
        "publish": proc,
        "data": tiny_tar,
    }


def test_a_trained_run_is_signed_and_the_upstream_cli_verifies_it(signed_training, keys):
    assert signed_training["publish"].returncode == 0, signed_training["publish"].stderr[-2000:]
    run = signed_training["run"]
    assert (run / "model.sig").is_file() and (run / "provenance.json").is_file()
    assert _upstream_verify(run, keys["a_pub"]).returncode == 0
    from job.storage.signing import load_trust, verify_run_signature

    info = verify_run_signature(run, load_trust(str(keys["a_pub"])))
    assert "provenance.json" in info.files and "model.onnx" in info.files and "saved_model/saved_model.pb" in info.files


def test_provenance_subjects_are_the_manifest_digests(signed_training):
    from google.protobuf import json_format
    from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
    from in_toto_attestation.v1 import statement_pb2
    from in_toto_attestation.v1.statement import Statement

    run = signed_training["run"]
    doc = json.loads((run / "provenance.json").read_text())
    statement = Statement.copy_from_pb(json_format.ParseDict(doc, statement_pb2.Statement()))
    statement.validate()  # in-toto Statement v1: type, subjects with digests, predicate type, predicate
    assert statement.pb.predicate_type == "https://slsa.dev/provenance/v1"
    predicate = json_format.ParseDict(doc["predicate"], provenance_pb2.Provenance())  # the SLSA v1 predicate's schema
    manifest = {f["path"]: f["sha256"] for f in json.loads((run / "manifest.json").read_text())["files"]}
    subjects = {s["name"]: s["digest"]["sha256"] for s in doc["subject"]}
    assert subjects == {p: d for p, d in manifest.items() if p not in ("provenance.json", "model.sig")}
    config = json.loads((run / "config.json").read_text())
    external = json_format.MessageToDict(predicate.build_definition.external_parameters)
    assert external["config"]["run_id"] == "signed-1" and external["config"]["sign_key"] == config["sign_key"]
    deps = {d["name"]: d for d in doc["predicate"]["buildDefinition"]["resolvedDependencies"]}
    data_sha = hashlib.sha256(Path(signed_training["data"]).read_bytes()).hexdigest()
    assert deps["training-data"]["digest"] == {"sha256": data_sha}
    metrics = json.loads((run / "metrics.json").read_text())
    assert deps["training-data"]["annotations"]["test_fingerprint"] == metrics["data"]["test_fingerprint"]
    lock = hashlib.sha256((ROOT / "requirements.lock").read_bytes()).hexdigest()
    assert deps["requirements.lock"]["digest"] == {"sha256": lock}
    assert deps["image"]["digest"] == {"sha256": "ab" * 32}
    assert "source" in deps
    details = doc["predicate"]["runDetails"]
    assert details["builder"]["id"] == "urn:cifar10-job:local" and details["metadata"]["invocationId"] == "signed-1"


@pytest.mark.parametrize(
    "platform,env,builder,invocation",
    [
        ("sagemaker", {"TRAINING_JOB_ARN": "arn:aws:sagemaker:eu-west-1:1:training-job/j1"}, "sagemaker", "job/j1"),
        ("vertex", {"CLOUD_ML_JOB_ID": "42", "CLOUD_ML_PROJECT_ID": "p"}, "vertex-ai", "projects/p/customJobs/42"),
        ("aws-batch", {"AWS_BATCH_JOB_ID": "b-1", "AWS_BATCH_JOB_ATTEMPT": "2"}, "batch", "b-1/attempt/2"),
        (
            "indexed-job",
            {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "POD_NAMESPACE": "ml", "HOSTNAME": "train-0-x"},
            "kubernetes.io",
            "namespaces/ml/pods/train-0-x",
        ),
        (
            "local",
            {
                "GITHUB_ACTIONS": "true",
                "GITHUB_RUN_ID": "77",
                "GITHUB_RUN_ATTEMPT": "1",
                "GITHUB_REPOSITORY": "o/r",
                "GITHUB_WORKFLOW_REF": "o/r/.github/workflows/t.yml@refs/heads/main",
            },
            "https://github.com/o/r/.github/workflows/t.yml@refs/heads/main",
            "https://github.com/o/r/actions/runs/77/attempts/1",
        ),
        ("local", {}, "urn:cifar10-job:local", "run-1"),
    ],
)
def test_provenance_names_the_platform_and_its_job(platform, env, builder, invocation):
    from job.report.provenance import builder_and_invocation

    got_builder, got_invocation = builder_and_invocation(platform, env, "run-1")
    assert builder in got_builder and got_invocation.endswith(invocation)


def test_a_signing_failure_after_training_keeps_the_run_unpublished(signed_training, keys):
    """The module's training (signed_training): its key vanished after it was checked, before the run was signed."""
    code, out, err = signed_training["train"]
    assert code == 4, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "signing the run" in errors[0] and "--sign-key" in errors[0], err[-2000:]
    assert signed_training["unpublished"] == {
        "kept_manifest": True,
        "kept_sig": False,
        "store_run": False,
        "store_latest": False,
    }
    proc = signed_training["publish"]
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _upstream_verify(signed_training["run"], keys["a_pub"]).returncode == 0


# ------------------------------------------------------------------------------------ the browser page


def test_the_page_shows_whether_the_run_is_signed_by_the_pasted_key(keys, template, tmp_path):
    web = ROOT / "examples" / "web"
    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    if not os.path.exists(chromium) or not (web / "node_modules" / "playwright-core").is_dir():
        needs(False, "Chromium or examples/web/node_modules", "apt-get install chromium; npm ci in examples/web")

    root = tmp_path / "www"
    root.mkdir()
    (root / "web").symlink_to(web)
    (root / "contract").symlink_to(ROOT / "examples" / "contract")
    runs = {
        "signed": _signed(keys, tmp_path / "b1", template),
        "other": _other_key(keys, tmp_path / "b2", template),
        "unsigned": _unsigned(keys, tmp_path / "b3", template),
        "swapped": _model_swapped(keys, tmp_path / "b4", template),
    }
    for name, folder in runs.items():
        shutil.copytree(folder, root / name)
    shutil.copy(keys["a_pub"], root / "a.pub")
    Image.fromarray(class_image(3, np.random.default_rng(0))).save(root / "cat.png")
    server, base = static_server(root)
    try:
        urls = {}
        for name in [*runs, "no key"]:
            run = "signed" if name == "no key" else name
            urls[name] = f"{base}/web/index.html?model={base}/{run}/model.onnx&image={base}/cat.png"
            urls[name] += "" if name == "no key" else f"&key={base}/a.pub"
        seen = dict(zip(urls, page_runs(list(urls.values())), strict=True))  # one Chromium, a context per URL
    finally:
        server.terminate()
        server.wait(timeout=10)
    print(json.dumps({k: v["page"]["signature"] for k, v in seen.items()}, indent=1))
    assert seen["signed"]["signature"] == {"checked": True, "verified": True}
    assert seen["signed"]["page"]["signature"].startswith("Signed by the pasted key")
    for name in ("other", "unsigned", "swapped"):
        assert seen[name]["signature"]["verified"] is False, seen[name]
        assert seen[name]["page"]["signature"].startswith("NOT signed by the pasted key"), seen[name]
    assert seen["no key"]["signature"] == {"checked": False}

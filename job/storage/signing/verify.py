"""Reading a signed run: `checked_manifest` (the readers' one call), `check_signature` (model.sig against a trust
anchor, the run's manifest and the run's id), `verify_run_signature` (one run folder checked whole),
`signature_state` (`runs list`'s column)."""

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from job.errors import DataError
from job.gates.json_doc import load_json
from job.gates.text import shown
from job.storage.layout import CONFIG, METRICS, PROVENANCE, SIGNATURE
from job.storage.signing.bundle import MAX_SIGNATURE_BYTES, UNSIGNED, refuse, verify_bundle
from job.storage.signing.keys import Trust


@dataclass(frozen=True)
class SignatureInfo:
    """What a verified model.sig says: the method, the signing key's fingerprint (sha256 of its PEM), the
    certificate's subject (certificate method), and the signed files with their sha256."""

    method: str
    key_fingerprint: str
    subject: str = ""
    files: dict = field(default_factory=dict)


def check_signature(store, run: str, trust: Trust, manifest: dict | None = None) -> SignatureInfo:
    """model.sig of `run` in `store` (a job.storage.runs.RunStore) against `trust` and the run's manifest:
    signed by the trusted key (or a valid certificate chaining to the trusted CA), over exactly the manifest's
    files and digests, and naming this run (`_check_run_id`). DataError (exit 3) otherwise. `manifest` is the
    copy the caller read once (RunStore.manifest) and then hashes the content against (RunStore.problems /
    download / fetch_verified): never read again here, so both checks see the same manifest."""
    where = f"run {shown(store.location.describe(run))}"
    manifest = store.manifest(run) if manifest is None else manifest
    entry = manifest["files"].get(SIGNATURE)
    if entry is None:
        raise refuse(where, f"it is not signed (no {SIGNATURE}) and a trusted key was given")
    raw = store.read(run, SIGNATURE)
    if raw is None or len(raw) != entry["bytes"] or hashlib.sha256(raw).hexdigest() != entry["sha256"]:
        raise refuse(where, f"{SIGNATURE} does not match the run's manifest")
    doc = load_json(raw, f"{where}: {SIGNATURE}", max_bytes=MAX_SIGNATURE_BYTES, expect=dict)
    signed, info = verify_bundle(doc, trust, where)
    expected = {path: e["sha256"] for path, e in manifest["files"].items() if path not in UNSIGNED}
    if set(signed) != set(expected):
        extra = sorted(set(signed) ^ set(expected))
        raise refuse(where, f"{SIGNATURE} covers another set of files ({shown(', '.join(extra), 120)})")
    for path in sorted(expected):
        if signed[path] != expected[path]:
            raise refuse(where, f"{shown(path)} is not the file that was signed (sha256)")
    _check_run_id(store, run, manifest, signed, where)
    return SignatureInfo(info["method"], info["fingerprint"], info.get("subject", ""), signed)


# The signed files that name their run, and where: a signature binds the run id through them.
RUN_ID_FILES = {
    PROVENANCE: ("predicate", "buildDefinition", "externalParameters", "config", "run_id"),
    METRICS: ("run_id",),
    CONFIG: ("run_id",),
}
MAX_RUN_ID_FILE_BYTES = 16 * 1024 * 1024


def _check_run_id(store, run: str, manifest: dict, signed: dict, where: str) -> None:
    """Another run signed by the same key, moved into this run's folder with a re-computed manifest, verifies:
    the signed provenance.json / metrics.json / config.json must name the run being read (its id in the store;
    for a run folder read directly, the run id of its manifest). Each is read once, hashed against its signed
    digest and parsed from those bytes. None of them signed, or another id in any: DataError (exit 3)."""
    expected = run or manifest.get("run_id")
    named = []
    for name, keys in RUN_ID_FILES.items():
        if name not in signed:
            continue
        if manifest["files"][name]["bytes"] > MAX_RUN_ID_FILE_BYTES:
            raise refuse(where, f"the signed {name} is over {MAX_RUN_ID_FILE_BYTES:,} bytes")
        raw = store.read(run, name)
        if raw is None or hashlib.sha256(raw).hexdigest() != signed[name]:
            raise refuse(where, f"{name} is not the file that was signed (sha256)")
        value = load_json(raw, f"{where}: {name}", allow_nan=True)
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        named.append((name, value))
    if not named:
        raise refuse(where, f"{SIGNATURE} covers no file naming the run ({', '.join(RUN_ID_FILES)})")
    for name, value in named:
        if not isinstance(expected, str) or value != expected:
            raise refuse(
                where, f"the signed {name} names run {shown(str(value), 120)}, not {shown(str(expected), 120)}"
            )


def checked_manifest(store, run: str, trust: Trust | None) -> dict:
    """The readers' one call: the run's manifest, read once; with a trust anchor, model.sig checked against
    that same copy. Pass the result to RunStore.problems / download / fetch_verified."""
    manifest = store.manifest(run)
    if trust is not None:
        check_signature(store, run, trust, manifest)
    return manifest


def signature_state(store, run: str, trust: Trust | None = None, manifest: dict | None = None) -> str:
    """`runs list`'s column: 'signed' / 'unsigned' from the manifest (unverified) without a trust anchor;
    'verified' / 'REFUSED' with one. `manifest`: the caller's one copy (None: read here; '-' if unreadable)."""
    try:
        manifest = store.manifest(run) if manifest is None else manifest
    except DataError:
        return "-"
    if trust is None:
        return "signed" if SIGNATURE in manifest["files"] else "unsigned"
    try:
        check_signature(store, run, trust, manifest)
    except DataError:
        return "REFUSED"
    return "verified"


def verify_run_signature(folder: str | Path, trust: Trust, s3_options=None) -> SignatureInfo:
    """One run folder (local, or an s3:// run prefix) checked whole: model.sig against `trust`, then every file
    hashed against the manifest, whose digests are the signed ones. Returns what the signature says; DataError
    (exit 3) when anything differs, StorageError (exit 4) when the store cannot be read. The entry point for
    consumers outside the CLI (the model server)."""
    from job.storage import open_store

    store = open_store(str(folder), s3_options)
    manifest = store.manifest("")  # read once: the signature and the content are checked against this copy
    info = check_signature(store, "", trust, manifest)
    found = store.problems("", manifest)
    if found:
        raise DataError(f"run {shown(str(folder))} does not match its manifest: {shown(found[0])}; refusing to use it")
    return info


def require_signature(store, run: str, trust: Trust | None, manifest: dict | None = None) -> SignatureInfo | None:
    """Nothing without a trust anchor, else check_signature (against `manifest`, the caller's one copy).
    Readers that go on to read content use `checked_manifest` instead."""
    return check_signature(store, run, trust, manifest) if trust is not None else None

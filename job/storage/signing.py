"""Signed runs: `model.sig`, the OpenSSF model-signing format (a Sigstore bundle holding a DSSE envelope over an
in-toto statement of every file's sha256), made and checked with the model-signing library.

Writing (`job train --sign-key`, `job publish --sign-key`): `sign_run` signs every file of a finished run folder
except manifest.json (written after it, and listing model.sig) and model.sig itself. Two methods: a private EC key
(P-256/384/521, optionally encrypted; its password from an environment variable), or that key with a certificate
and its chain from your own CA. The upstream CLI verifies the result as is:

    model_signing verify key RUN --signature RUN/model.sig --public_key KEY.pub --ignore-paths RUN/manifest.json

Reading (`--public-key PEM`, `--trust-certificate CHAIN`, or JOB_TRUSTED_KEY): `check_signature` proves that the
run is signed by the trusted key (or a certificate that chains to the trusted CA and is valid now), that the
signed digests are exactly manifest.json's (same file set, same sha256), and that the signed provenance.json /
metrics.json / config.json name the run being read. The manifest is read ONCE per reader (`checked_manifest`):
the signature is checked against that copy and the caller hashes the content against the same copy, as it
streams into the file that is used, so the bytes loaded are the bytes signed. `verify_run_signature` does both
for one run folder (local or s3://): the one entry point for other consumers.

Without a trust anchor nothing here runs: signing is opt-in, and unsigned runs are read as before. The
model-signing package (and its dependencies) is imported only when a key or certificate is given.
"""

import base64
import datetime
import hashlib
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from job.errors import ConfigError, DataError, StorageError
from job.gates.json_doc import load_json
from job.gates.text import shown
from job.storage.manifest import MANIFEST

SIGNATURE = "model.sig"
PROVENANCE = "provenance.json"
UNSIGNED = (MANIFEST, SIGNATURE)  # what a signature covers: every file of the run except these two
MAX_SIGNATURE_BYTES = 1024 * 1024  # a bundle for a run's ~20 files and a certificate chain is a few kB
MAX_PEM_BYTES = 256 * 1024
TRUST_ENV = "JOB_TRUSTED_KEY"
_CURVES = ("secp256r1", "secp384r1", "secp521r1")  # what the model-signing format supports


# ----------------------------------------------------------------------------- keys


def key_fingerprint(public_key) -> str:
    """sha256 of the public key's PEM (SubjectPublicKeyInfo): the key id model.sig records as its hint."""
    from cryptography.hazmat.primitives import serialization

    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(pem).hexdigest()


def _read_pem(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{what} {shown(path)} cannot be read ({exc.strerror or exc})") from None
    if len(data) > MAX_PEM_BYTES:
        raise ConfigError(f"{what} {shown(path)} is over {MAX_PEM_BYTES:,} bytes; give a PEM file")
    return data


def _check_curve(public_key, what: str) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name not in _CURVES:
        kind = getattr(getattr(public_key, "curve", None), "name", type(public_key).__name__)
        raise ConfigError(f"{what} is a {kind} key; the model-signing format takes EC keys on P-256, P-384 or P-521")


def _certificates(data: bytes, what: str, path: str) -> list:
    from cryptography import x509

    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise ConfigError(f"{what} {shown(path)} holds no PEM certificate")
    return certs


def _check_leaf_usage(leaf, path: str) -> None:
    """What every reader (and the model-signing verifier) requires of the leaf: KeyUsage digitalSignature, or
    ExtendedKeyUsage codeSigning. Checked at key load, so no run is published that every reader refuses."""
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    try:
        if leaf.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature:
            return
    except x509.ExtensionNotFound:
        pass
    try:
        if ExtendedKeyUsageOID.CODE_SIGNING in leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value:
            return
    except x509.ExtensionNotFound:
        pass
    raise ConfigError(
        f"--sign-certificate {shown(path)} does not allow signing (it needs KeyUsage digitalSignature or "
        "ExtendedKeyUsage codeSigning); every reader would refuse the run"
    )


@dataclass(frozen=True)
class Signer:
    """A loaded signing key (checked before any data is read), with its certificate and chain for that method."""

    key_path: str
    password: bytes | None = field(repr=False, default=None)
    certificate: str = ""
    chain: tuple[str, ...] = ()
    fingerprint: str = ""

    @property
    def method(self) -> str:
        return "certificate" if self.certificate else "key"


def load_signer(
    key: str, password_env: str = "", certificate: str = "", chain: str = "", env: Mapping[str, str] | None = None
) -> Signer | None:
    """The signer of `--sign-key` (None without one). A key that does not load, a missing password variable, a
    key on another curve or a certificate for another key is a ConfigError (exit 2), raised before any data is
    read."""
    env = os.environ if env is None else env
    if not key:
        if certificate or chain:
            raise ConfigError("--sign-certificate / --sign-chain need --sign-key (the certificate's private key)")
        return None
    from cryptography.hazmat.primitives import serialization

    password = None
    if password_env:
        if password_env not in env:
            raise ConfigError(f"--sign-key-password-env {shown(password_env)}: that variable is not set")
        password = env[password_env].encode()
    data = _read_pem(key, "--sign-key")
    try:
        private = serialization.load_pem_private_key(data, password)
    except TypeError as exc:  # encrypted without a password, or a password for a plain key
        raise ConfigError(f"--sign-key {shown(key)}: {exc}; pass --sign-key-password-env NAME") from None
    except ValueError as exc:
        reason = str(exc).splitlines()[0][:160] if str(exc) else "not a PEM private key"
        raise ConfigError(f"--sign-key {shown(key)} does not load ({reason})") from None
    except Exception as exc:  # cryptography's UnsupportedAlgorithm and the like
        raise ConfigError(f"--sign-key {shown(key)} does not load ({type(exc).__name__})") from None
    _check_curve(private.public_key(), f"--sign-key {shown(key)}")
    chain_paths: tuple[str, ...] = ()
    if certificate:
        leaf = _certificates(_read_pem(certificate, "--sign-certificate"), "--sign-certificate", certificate)[0]
        if leaf.public_key() != private.public_key():
            raise ConfigError(f"--sign-certificate {shown(certificate)} is not the certificate of --sign-key's key")
        _check_leaf_usage(leaf, certificate)
        if not chain:
            raise ConfigError(
                "--sign-certificate needs --sign-chain: the certificates from the leaf's issuer up to your root "
                "(for a leaf issued by the root itself, the root's certificate)"
            )
        _certificates(_read_pem(chain, "--sign-chain"), "--sign-chain", chain)
        chain_paths = (chain,)
    elif chain:
        raise ConfigError("--sign-chain needs --sign-certificate")
    return Signer(key, password, certificate, chain_paths, key_fingerprint(private.public_key()))


def signer_of(cfg) -> Signer | None:
    """The signer a Config asks for (job train / job publish)."""
    return load_signer(cfg.sign_key, cfg.sign_key_password_env, cfg.sign_certificate, cfg.sign_chain)


@dataclass(frozen=True)
class Trust:
    """What a reader trusts: one public key, or the certificates of a CA (a leaf must chain to them)."""

    method: str  # "key" | "certificate"
    path: str
    pem: bytes = field(repr=False)
    fingerprint: str = ""  # the key's, for method "key"


def load_trust(public_key: str = "", certificate: str = "", env: Mapping[str, str] | None = None) -> Trust | None:
    """`--public-key PEM` / `--trust-certificate CHAIN`, else JOB_TRUSTED_KEY (a public key or a certificate chain,
    told apart by its PEM header); None when none is given (unsigned runs are then read as before). A file that
    does not load is a ConfigError (exit 2)."""
    env = os.environ if env is None else env
    if public_key and certificate:
        raise ConfigError("give --public-key or --trust-certificate, not both")
    if not public_key and not certificate:
        value = env.get(TRUST_ENV, "")
        if not value:
            return None
        head = _read_pem(value, TRUST_ENV)
        public_key, certificate = ("", value) if b"-----BEGIN CERTIFICATE-----" in head else (value, "")
    if certificate:
        data = _read_pem(certificate, "--trust-certificate")
        _certificates(data, "--trust-certificate", certificate)
        return Trust("certificate", certificate, data)
    from cryptography.hazmat.primitives import serialization

    data = _read_pem(public_key, "--public-key")
    try:
        key = serialization.load_pem_public_key(data)
    except Exception:  # ValueError, UnsupportedAlgorithm
        raise ConfigError(f"--public-key {shown(public_key)} is not a PEM public key") from None
    _check_curve(key, f"--public-key {shown(public_key)}")
    return Trust("key", public_key, data, key_fingerprint(key))


def trust_of(cfg) -> Trust | None:
    """The trust anchor a Config gives (`job train --baseline`)."""
    return load_trust(cfg.public_key, cfg.trust_certificate)


def add_trust_arguments(parser) -> None:
    """`--public-key` / `--trust-certificate` on a reader's parser."""
    parser.add_argument(
        "--public-key",
        default="",
        metavar="PEM",
        help=f"require model.sig signed by this public key (exit 3 otherwise) [{TRUST_ENV}]",
    )
    parser.add_argument(
        "--trust-certificate",
        default="",
        metavar="CHAIN",
        help="require model.sig signed with a certificate that chains to these CA certificates and is valid now",
    )


# ----------------------------------------------------------------------------- signing


def sign_run(run_dir: Path, signer: Signer) -> Path:
    """Write run_dir/model.sig over every file of the run but manifest.json (write the manifest after it)."""
    import model_signing

    signature = Path(run_dir) / SIGNATURE
    signature.unlink(missing_ok=True)
    hashing = model_signing.hashing.Config().set_ignored_paths(paths=list(UNSIGNED), ignore_git_paths=False)
    config = model_signing.signing.Config().set_hashing_config(hashing)
    if signer.method == "key":
        # The library types the password as str but hands it to cryptography, which takes bytes.
        config.use_elliptic_key_signer(private_key=signer.key_path, password=signer.password)
        config.sign(Path(run_dir), signature)
        return signature
    with _plain_key(signer) as key_path:
        config.use_certificate_signer(
            private_key=key_path, signing_certificate=signer.certificate, certificate_chain=list(signer.chain)
        )
        config.sign(Path(run_dir), signature)
    return signature


class _plain_key:
    """The certificate signer of model-signing reads an unencrypted key from a path: an encrypted key is
    decrypted into an anonymous in-memory file (never onto a disk) for the length of the signing."""

    def __init__(self, signer: Signer):
        self.signer, self.fd = signer, None

    def __enter__(self) -> str:
        if self.signer.password is None:
            return self.signer.key_path
        from cryptography.hazmat.primitives import serialization

        key = serialization.load_pem_private_key(Path(self.signer.key_path).read_bytes(), self.signer.password)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        self.fd = os.memfd_create("sign-key")
        os.write(self.fd, pem)
        return f"/proc/self/fd/{self.fd}"

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)


def sign_or_keep(run_dir: Path, signer: Signer) -> None:
    """sign_run for the pipeline: any failure is a StorageError (exit 4); no partial model.sig is left."""
    try:
        sign_run(run_dir, signer)
    except Exception as exc:  # the library raises ValueError, OSError, cryptography's errors...
        (Path(run_dir) / SIGNATURE).unlink(missing_ok=True)
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise StorageError(f"signing the run with {shown(signer.key_path)} failed ({shown(reason)})") from None


# ----------------------------------------------------------------------------- verifying


@dataclass(frozen=True)
class SignatureInfo:
    """What a verified model.sig says: the method, the signing key's fingerprint (sha256 of its PEM), the
    certificate's subject (certificate method), and the signed files with their sha256."""

    method: str
    key_fingerprint: str
    subject: str = ""
    files: dict = field(default_factory=dict)


def _refuse(where: str, why: str) -> DataError:
    return DataError(f"{where}: {why}; refusing to use it")


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
        raise _refuse(where, f"it is not signed (no {SIGNATURE}) and a trusted key was given")
    raw = store.read(run, SIGNATURE)
    if raw is None or len(raw) != entry["bytes"] or hashlib.sha256(raw).hexdigest() != entry["sha256"]:
        raise _refuse(where, f"{SIGNATURE} does not match the run's manifest")
    doc = load_json(raw, f"{where}: {SIGNATURE}", max_bytes=MAX_SIGNATURE_BYTES, expect=dict)
    signed, info = _verify_bundle(doc, trust, where)
    expected = {path: e["sha256"] for path, e in manifest["files"].items() if path not in UNSIGNED}
    if set(signed) != set(expected):
        extra = sorted(set(signed) ^ set(expected))
        raise _refuse(where, f"{SIGNATURE} covers another set of files ({shown(', '.join(extra), 120)})")
    for path in sorted(expected):
        if signed[path] != expected[path]:
            raise _refuse(where, f"{shown(path)} is not the file that was signed (sha256)")
    _check_run_id(store, run, manifest, signed, where)
    return SignatureInfo(info["method"], info["fingerprint"], info.get("subject", ""), signed)


# The signed files that name their run, and where: a signature binds the run id through them.
RUN_ID_FILES = {
    PROVENANCE: ("predicate", "buildDefinition", "externalParameters", "config", "run_id"),
    "metrics.json": ("run_id",),
    "config.json": ("run_id",),
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
            raise _refuse(where, f"the signed {name} is over {MAX_RUN_ID_FILE_BYTES:,} bytes")
        raw = store.read(run, name)
        if raw is None or hashlib.sha256(raw).hexdigest() != signed[name]:
            raise _refuse(where, f"{name} is not the file that was signed (sha256)")
        value = load_json(raw, f"{where}: {name}", allow_nan=True)
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        named.append((name, value))
    if not named:
        raise _refuse(where, f"{SIGNATURE} covers no file naming the run ({', '.join(RUN_ID_FILES)})")
    for name, value in named:
        if not isinstance(expected, str) or value != expected:
            raise _refuse(
                where, f"the signed {name} names run {shown(str(value), 120)}, not {shown(str(expected), 120)}"
            )


def checked_manifest(store, run: str, trust: Trust | None) -> dict:
    """The readers' one call: the run's manifest, read once; with a trust anchor, model.sig checked against
    that same copy. Pass the result to RunStore.problems / download / fetch_verified."""
    manifest = store.manifest(run)
    if trust is not None:
        check_signature(store, run, trust, manifest)
    return manifest


def _verify_bundle(doc: dict, trust: Trust, where: str) -> tuple[dict, dict]:
    """The signed {path: sha256} of a parsed bundle, after the library verified it against `trust`."""
    material = doc.get("verificationMaterial")
    if not isinstance(material, dict) or not isinstance(doc.get("dsseEnvelope"), dict):
        raise _refuse(where, f"{SIGNATURE} is not a model-signing bundle")
    has_chain = "x509CertificateChain" in material
    if trust.method == "key" and has_chain:
        raise _refuse(where, f"{SIGNATURE} is signed with a certificate; give --trust-certificate, not --public-key")
    if trust.method == "certificate" and not has_chain:
        raise _refuse(where, f"{SIGNATURE} is signed with a bare key, not a certificate of the trusted CA")
    with tempfile.TemporaryDirectory(prefix="model-sig-") as tmp:
        sig_path, trust_path = Path(tmp) / SIGNATURE, Path(tmp) / "trust.pem"
        sig_path.write_bytes(_dumps(doc))
        trust_path.write_bytes(trust.pem)
        try:
            from model_signing._signing import sign_certificate, sign_ec_key, sign_sigstore_pb

            signature = sign_sigstore_pb.Signature.read(sig_path)
            if trust.method == "key":
                verifier = sign_ec_key.Verifier(trust_path)
            else:
                verifier = sign_certificate.Verifier([trust_path])
            signed = verifier.verify(signature)
        except Exception as exc:  # the library raises ValueError, KeyError, OpenSSL and cryptography errors
            reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            if type(exc).__name__ == "InvalidSignature":
                reason = "the signature does not verify with the trusted key"
            raise _refuse(where, f"{SIGNATURE} does not verify ({shown(reason)})") from None
    info = {"method": trust.method, "fingerprint": trust.fingerprint}
    if trust.method == "certificate":
        info.update(_certificate_now(material, where))
    serialization = signed.serialization_type
    ignored = {str(p) for p in serialization.get("ignore_paths", ())}
    if serialization.get("method") != "files" or serialization.get("hash_type") != "sha256" or ignored - set(UNSIGNED):
        raise _refuse(where, f"{SIGNATURE} was not made by this job's signer (serialization {shown(serialization)})")
    files = {}
    for descriptor in signed.resource_descriptors():
        files[str(descriptor.identifier)] = descriptor.digest.digest_hex
    return files, info


def _dumps(doc: dict) -> bytes:
    import json

    return json.dumps(doc).encode()


def _certificate_now(material: dict, where: str) -> dict:
    """The library checks the chain at the leaf's start time; a reader also wants every certificate of the
    chain valid now (no trusted timestamp says when the run was signed)."""
    from cryptography import x509

    now = datetime.datetime.now(datetime.UTC)
    certs = []
    for entry in material["x509CertificateChain"].get("certificates", []):
        certs.append(x509.load_der_x509_certificate(base64.b64decode(entry["rawBytes"])))
    for cert in certs:
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise _refuse(
                where,
                f"the certificate {shown(cert.subject.rfc4514_string(), 120)} is not valid now "
                f"({cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d})",
            )
    return {"subject": certs[0].subject.rfc4514_string(), "fingerprint": key_fingerprint(certs[0].public_key())}


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


def signed_copy(run_dir: Path, run_id: str, signer: Signer, into: Path) -> Path:
    """`job publish --sign-key`: a copy of a finished run folder (checked against its manifest first) under
    `into`, signed, with its manifest rewritten to list model.sig. An old model.sig is replaced."""
    import shutil

    from job.storage.manifest import write_manifest
    from job.storage.runs import local_manifest_problems

    found = local_manifest_problems(run_dir)
    if found:
        raise DataError(f"{run_dir} does not match its manifest: {found[0]}; nothing was published")
    copy = Path(into) / run_id
    try:
        shutil.copytree(run_dir, copy, symlinks=True)
        (copy / MANIFEST).unlink()
    except OSError as exc:
        raise StorageError(f"cannot copy {run_dir} to sign it ({exc.strerror or exc}); nothing was published") from None
    sign_or_keep(copy, signer)
    write_manifest(copy, run_id)
    return copy


def signature_fingerprint(run_dir: Path) -> str | None:
    """The signing key's fingerprint recorded in a run folder's own model.sig (the job's, just written; not a
    verification): the key hint, or the leaf certificate's key. None for an unsigned run."""
    path = Path(run_dir) / SIGNATURE
    if not path.is_file():
        return None
    try:
        doc = load_json(path.read_bytes(), str(path), max_bytes=MAX_SIGNATURE_BYTES, expect=dict)
        material = doc.get("verificationMaterial") or {}
        if isinstance(material.get("publicKey"), dict) and material["publicKey"].get("hint"):
            return str(material["publicKey"]["hint"])
        from cryptography import x509

        leaf = material["x509CertificateChain"]["certificates"][0]["rawBytes"]
        return key_fingerprint(x509.load_der_x509_certificate(base64.b64decode(leaf)).public_key())
    except (DataError, KeyError, IndexError, TypeError, ValueError):
        return None

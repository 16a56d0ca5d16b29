"""Signing a run: `sign_run` writes model.sig over every file of a finished run folder but manifest.json (written
after it) and model.sig itself; `sign_or_keep` is the pipeline's call, `signed_copy` `job publish --sign-key`'s.
The model-signing package is imported only when a key is given."""

import base64
import os
from pathlib import Path

from job.errors import DataError, StorageError
from job.gates.json_doc import load_json
from job.gates.text import shown
from job.storage.layout import MANIFEST, SIGNATURE
from job.storage.signing.bundle import MAX_SIGNATURE_BYTES, UNSIGNED
from job.storage.signing.keys import Signer, key_fingerprint


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

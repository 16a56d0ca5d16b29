"""model.sig's format: a Sigstore bundle (a DSSE envelope over an in-toto statement of every file's sha256) that
covers every file of a run but UNSIGNED; `verify_bundle` has the model-signing library verify one against a trust
anchor and returns the signed digests. Nothing here reads a store: job.storage.signing.verify does."""

import base64
import datetime
import tempfile
from pathlib import Path

from job.errors import DataError
from job.gates.text import shown
from job.storage.layout import MANIFEST, SIGNATURE
from job.storage.signing.keys import Trust, key_fingerprint

UNSIGNED = (MANIFEST, SIGNATURE)  # what a signature covers: every file of the run except these two
MAX_SIGNATURE_BYTES = 1024 * 1024  # a bundle for a run's ~20 files and a certificate chain is a few kB


def refuse(where: str, why: str) -> DataError:
    return DataError(f"{where}: {why}; refusing to use it")


def verify_bundle(doc: dict, trust: Trust, where: str) -> tuple[dict, dict]:
    """The signed {path: sha256} of a parsed bundle, after the library verified it against `trust`."""
    material = doc.get("verificationMaterial")
    if not isinstance(material, dict) or not isinstance(doc.get("dsseEnvelope"), dict):
        raise refuse(where, f"{SIGNATURE} is not a model-signing bundle")
    has_chain = "x509CertificateChain" in material
    if trust.method == "key" and has_chain:
        raise refuse(where, f"{SIGNATURE} is signed with a certificate; give --trust-certificate, not --public-key")
    if trust.method == "certificate" and not has_chain:
        raise refuse(where, f"{SIGNATURE} is signed with a bare key, not a certificate of the trusted CA")
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
            raise refuse(where, f"{SIGNATURE} does not verify ({shown(reason)})") from None
    info = {"method": trust.method, "fingerprint": trust.fingerprint}
    if trust.method == "certificate":
        info.update(_certificate_now(material, where))
    serialization = signed.serialization_type
    ignored = {str(p) for p in serialization.get("ignore_paths", ())}
    if serialization.get("method") != "files" or serialization.get("hash_type") != "sha256" or ignored - set(UNSIGNED):
        raise refuse(where, f"{SIGNATURE} was not made by this job's signer (serialization {shown(serialization)})")
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
            raise refuse(
                where,
                f"the certificate {shown(cert.subject.rfc4514_string(), 120)} is not valid now "
                f"({cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d})",
            )
    return {"subject": certs[0].subject.rfc4514_string(), "fingerprint": key_fingerprint(certs[0].public_key())}

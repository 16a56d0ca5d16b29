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


    keys.py    the signer (--sign-key ...) and the trust anchor (--public-key / --trust-certificate), loaded first
    sign.py    model.sig written over a finished run folder
    bundle.py  model.sig's format, verified by the model-signing library against a trust anchor
    verify.py  a run read from a store: its signature against the anchor, its manifest and its run id
"""

from job.storage.layout import PROVENANCE, SIGNATURE
from job.storage.signing.bundle import MAX_SIGNATURE_BYTES, UNSIGNED
from job.storage.signing.keys import (
    TRUST_ENV,
    Signer,
    Trust,
    add_trust_arguments,
    key_fingerprint,
    load_signer,
    load_trust,
    signer_of,
    trust_of,
)
from job.storage.signing.sign import sign_or_keep, sign_run, signature_fingerprint, signed_copy
from job.storage.signing.verify import (
    RUN_ID_FILES,
    SignatureInfo,
    check_signature,
    checked_manifest,
    require_signature,
    signature_state,
    verify_run_signature,
)

__all__ = [
    "MAX_SIGNATURE_BYTES",
    "PROVENANCE",
    "RUN_ID_FILES",
    "SIGNATURE",
    "TRUST_ENV",
    "UNSIGNED",
    "SignatureInfo",
    "Signer",
    "Trust",
    "add_trust_arguments",
    "check_signature",
    "checked_manifest",
    "key_fingerprint",
    "load_signer",
    "load_trust",
    "require_signature",
    "sign_or_keep",
    "sign_run",
    "signature_fingerprint",
    "signature_state",
    "signed_copy",
    "signer_of",
    "trust_of",
    "verify_run_signature",
]

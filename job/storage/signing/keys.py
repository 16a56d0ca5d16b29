"""Keys and trust anchors for model.sig: the signer of `--sign-key` (with `--sign-certificate` / `--sign-chain`),
the trust of `--public-key` / `--trust-certificate` / JOB_TRUSTED_KEY, each loaded and checked before any data is
read (ConfigError, exit 2). cryptography is imported only when a key or certificate is given."""

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from job.config.parts import SigningConfig, TrustConfig
from job.errors import ConfigError
from job.gates.text import shown

MAX_PEM_BYTES = 256 * 1024
TRUST_ENV = "JOB_TRUSTED_KEY"
_CURVES = ("secp256r1", "secp384r1", "secp521r1")  # what the model-signing format supports


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


def signer_of(signing: SigningConfig) -> Signer | None:
    """The signer the publish settings ask for (job train / job publish: cfg.publishing.signing)."""
    return load_signer(signing.key, signing.key_password_env, signing.certificate, signing.chain)


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


def trust_of(trust: TrustConfig) -> Trust | None:
    """The trust anchor the gate settings give (`job train --baseline`: cfg.gates.trust)."""
    return load_trust(trust.public_key, trust.certificate)


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

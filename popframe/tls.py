"""TLS server contexts from PEM files, and self-signed certificates.

Certificates and keys are loaded as ``cryptography`` objects and handed to
Twisted's ``CertificateOptions`` as they are: pyOpenSSL 26 converts them
itself and warns on its own ``X509``/``PKey`` types.  Every problem with the
files becomes a :class:`~popframe.config.ConfigurationError` at start-up,
not a failed handshake at the first client.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL
from twisted.internet.ssl import AcceptableCiphers, CertificateOptions, TLSVersion

from popframe.config import ConfigurationError
from popframe.files import write_file_atomically
from popframe.twisted_internals import replace_tls_options, tls_options, wrapped_endpoint

if TYPE_CHECKING:
    from OpenSSL.crypto import X509

__all__ = [
    "MINIMUM_TLS_VERSION",
    "ServerCertificate",
    "certificate_options",
    "harden_endpoint",
    "load_client_cas",
    "load_server_certificate",
    "load_tls_options",
    "make_self_signed",
]

#: ``raiseMinimumTo``: TLS 1.2 now, or Twisted's default if that ever rises.
MINIMUM_TLS_VERSION = TLSVersion.TLSv1_2

#: Session tickets, so a client polling every few minutes resumes instead
#: of repeating the full handshake (Twisted turns them off by default).
#: The ticket key is OpenSSL's own: random, made when the context is, so
#: one per process: with ``--workers N`` a ticket resumes only on the
#: worker that issued it (another one makes a full handshake and a new
#: ticket); it lives as long as the process.  TLS 1.3 resumption still
#: runs an (EC)DHE exchange (OpenSSL's psk_dhe_ke), so forward secrecy
#: does not depend on the key.
SESSION_TICKETS = True

#: TLS 1.2 suites with an ephemeral key exchange only (forward secrecy;
#: every TLS 1.3 suite has it), AEAD or AES-CBC, nothing NULL, EXPORT,
#: RC4, DES/3DES, anonymous or MD5.  Twisted's default list also accepts
#: static-RSA key exchange (TLS_RSA_WITH_AES_*) with an RSA certificate:
#: found by the sslyze scan in tests/test_tls_scan.py.
CIPHERS = (
    "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:ECDHE+AES:DHE+AES"
    ":!aNULL:!eNULL:!EXPORT:!MD5:!RC4:!DES:!3DES:!DSS:!PSK:!SRP:!kRSA"
)


def acceptable_ciphers() -> AcceptableCiphers:
    return AcceptableCiphers.fromOpenSSLCipherString(CIPHERS)

CERT_KEY = "--tls-cert"
KEY_KEY = "--tls-key"
CLIENT_CA_KEY = "--tls-client-ca"

TLSPrivateKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
    | dsa.DSAPrivateKey
)
_TLS_KEY_TYPES = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
    dsa.DSAPrivateKey,
)


@dataclass(frozen=True)
class ServerCertificate:
    """A checked key pair: the server certificate, its private key and the
    intermediates sent with it (never the certificate itself)."""

    certificate: x509.Certificate
    private_key: TLSPrivateKey
    chain: tuple[x509.Certificate, ...] = ()


# -- loading -----------------------------------------------------------------


def load_tls_options(
    cert_paths: str | Sequence[str],
    key_paths: str | Sequence[str] | None = None,
    client_ca: str | None = None,
    ocsp_paths: Sequence[str] = (),
) -> CertificateOptions:
    """Server TLS options from PEM certificate files (server certificate
    first, then intermediates; or directories of them, see
    :func:`popframe.sni.certificate_files`) and PEM key files (none: the
    key is in the certificate file).  Several certificates are chosen by
    the client's SNI name (:class:`popframe.sni.ServerNames`), the first
    is the default.  With ``client_ca`` (a PEM file of CA certificates),
    client certificates are requested and verified against those CAs;
    ``ocsp_paths`` are OCSP responses to staple (:mod:`popframe.ocsp`).
    Raises ``ConfigurationError`` naming the option.
    """
    from popframe.ocsp import load_staples, staple
    from popframe.sni import ServerNames, load_certificates

    certs = [cert_paths] if isinstance(cert_paths, str) else list(cert_paths)
    keys = [key_paths] if isinstance(key_paths, str) else list(key_paths or ())
    client_cas = load_client_cas(client_ca) if client_ca else ()
    certificates = load_certificates(certs, keys)
    staples = load_staples(ocsp_paths, [c.server.certificate for c in certificates])
    others = []
    for index, named in enumerate(certificates[1:], start=1):
        context = certificate_options(named.server, client_cas=client_cas).getContext()
        staple(context, staples.get(index))
        others.append((named.names, context))
    default = certificates[0]
    options = certificate_options(
        default.server,
        context_for_server_name=ServerNames(default.names, others) if others else None,
        client_cas=client_cas,
    )
    staple(options.getContext(), staples.get(0))
    return options


def load_client_cas(path: str | os.PathLike[str]) -> tuple[x509.Certificate, ...]:
    """The CA certificates that issue client certificates (SASL EXTERNAL)."""
    path = os.fspath(path)
    data = _read(CLIENT_CA_KEY, path)
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise ConfigurationError(CLIENT_CA_KEY, f"no PEM certificate (BEGIN CERTIFICATE) in {path}")
    try:
        return tuple(x509.load_pem_x509_certificates(data))
    except ValueError as error:
        raise ConfigurationError(
            CLIENT_CA_KEY, f"invalid PEM certificate in {path}: {error}"
        ) from error


def load_server_certificate(
    cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str] | None = None
) -> ServerCertificate:
    """Read and cross-check the certificate chain and private key.

    Separate from :func:`certificate_options` so an SNI map can load many
    pairs the same way.
    """
    cert_path = os.fspath(cert_path)
    certificates = _load_certificates(cert_path)
    if key_path is None:
        key = _load_private_key(cert_path, _read(CERT_KEY, cert_path), CERT_KEY, combined=True)
    else:
        key_path = os.fspath(key_path)
        key = _load_private_key(key_path, _read(KEY_KEY, key_path), KEY_KEY, combined=False)
    _check_key_matches(certificates, key, cert_path, KEY_KEY if key_path else CERT_KEY)
    return ServerCertificate(certificates[0], key, tuple(certificates[1:]))


def certificate_options(
    server: ServerCertificate,
    *,
    context_for_server_name: Callable[[bytes | None], SSL.Context | None] | None = None,
    client_cas: tuple[x509.Certificate, ...] = (),
) -> CertificateOptions:
    """``CertificateOptions`` for a checked pair: TLS 1.2 at least and
    Twisted's default cipher list.  The context is built here, once, so
    OpenSSL's own objections (an RSA key too small for its security level,
    say) surface at start-up.

    With ``client_cas``, every client is asked for a certificate (and told
    which CAs issue them); one that sends a certificate those CAs (and
    only those, never the system store) do not vouch for fails the
    handshake, one that sends none connects as usual.  Contexts that
    ``context_for_server_name`` returns must be set up the same way.
    """
    options = CertificateOptions(
        # cryptography objects: Twisted's hints say pyOpenSSL types, but
        # pyOpenSSL accepts both and deprecates its own.
        privateKey=server.private_key,  # type: ignore[arg-type]
        certificate=server.certificate,  # type: ignore[arg-type]
        extraCertChain=list(server.chain),  # type: ignore[arg-type]
        raiseMinimumTo=MINIMUM_TLS_VERSION,
        acceptableCiphers=acceptable_ciphers(),
        contextForServerName=context_for_server_name,
        enableSessionTickets=SESSION_TICKETS,
        **_client_verification(client_cas),
    )
    try:
        context = options.getContext()
        for ca in client_cas:  # the CA names sent in the CertificateRequest
            context.add_client_ca(ca)
    except SSL.Error as error:
        raise ConfigurationError(
            CERT_KEY, f"OpenSSL refuses the certificate or key: {_ssl_reason(error)}"
        ) from error
    return options


class _ClientVerification(TypedDict, total=False):
    verify: bool
    caCerts: list[X509]
    requireCertificate: bool


def _client_verification(client_cas: tuple[x509.Certificate, ...]) -> _ClientVerification:
    """Twisted's arguments for optional client certificates: ``trustRoot``
    would make them mandatory, so the older ``verify``/``caCerts`` (which
    take pyOpenSSL's type; its conversion does not warn)."""
    if not client_cas:
        return {}
    from OpenSSL.crypto import X509

    return {
        "verify": True,
        "caCerts": [X509.from_cryptography(ca) for ca in client_cas],
        "requireCertificate": False,
    }


def _read(option: str, path: str) -> bytes:
    from popframe.config.snapshot import read_file

    try:
        return read_file(path)
    except OSError as error:
        raise ConfigurationError(
            option, f"cannot read {path}: {error.strerror or error}"
        ) from error


def _load_certificates(path: str) -> list[x509.Certificate]:
    data = _read(CERT_KEY, path)
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise ConfigurationError(CERT_KEY, f"no PEM certificate (BEGIN CERTIFICATE) in {path}")
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as error:
        raise ConfigurationError(CERT_KEY, f"invalid PEM certificate in {path}: {error}") from error


def _load_private_key(path: str, data: bytes, option: str, *, combined: bool) -> TLSPrivateKey:
    if b"PRIVATE KEY-----" not in data:
        if combined:
            raise ConfigurationError(
                option, f"no private key in {path}; append it there or give {KEY_KEY}"
            )
        raise ConfigurationError(option, f"no PEM private key (BEGIN ... PRIVATE KEY) in {path}")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError as error:  # encrypted, and we have no passphrase
        raise ConfigurationError(
            option,
            f"the private key in {path} is encrypted; decrypt it "
            f"(openssl pkey -in {path} -out NEW.pem) and protect the file with mode 0600",
        ) from error
    except (ValueError, UnsupportedAlgorithm) as error:
        raise ConfigurationError(option, f"invalid PEM private key in {path}: {error}") from error
    if not isinstance(key, _TLS_KEY_TYPES):
        raise ConfigurationError(
            option, f"the private key in {path} is a {type(key).__name__}, unusable for TLS"
        )
    return key


def _public_der(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _check_key_matches(
    certificates: list[x509.Certificate], key: TLSPrivateKey, cert_path: str, option: str
) -> None:
    """The key must belong to the first certificate; when it belongs to a
    later one, the file is merely in the wrong order, so say that."""
    wanted = _public_der(key.public_key())
    if _public_der(certificates[0].public_key()) == wanted:
        return
    for number, certificate in enumerate(certificates[1:], start=2):
        if _public_der(certificate.public_key()) == wanted:
            raise ConfigurationError(
                CERT_KEY,
                f"the private key matches certificate #{number} in {cert_path} "
                f"({certificate.subject.rfc4514_string()}); list the server "
                "certificate first, then its intermediates",
            )
    raise ConfigurationError(
        option,
        "private key does not match certificate "
        f"{certificates[0].subject.rfc4514_string()} in {cert_path}",
    )


def _ssl_reason(error: SSL.Error) -> str:
    """OpenSSL's error queue as one readable line."""
    parts = [
        str(entry[-1])
        for entry in (error.args[0] if error.args else [])
        if isinstance(entry, tuple)
    ]
    return "; ".join(part for part in parts if part) or str(error)


# -- self-signed certificates -------------------------------------------------


def make_self_signed(
    cert_path: str | os.PathLike[str],
    key_path: str | os.PathLike[str],
    hostnames: Iterable[str] = ("localhost",),
    ip_addresses: Iterable[str] = ("127.0.0.1", "::1"),
    days: int = 825,
) -> None:
    """Write a new EC P-256 key (mode 0600) and a self-signed certificate
    for the names and addresses given.

    825 days is the longest validity Apple clients accept for a TLS server
    certificate.  The certificate is a plain end-entity certificate (CA
    false), which clients accept as a trust anchor given directly
    (``curl --cacert``, ``ssl.create_default_context(cafile=...)``).
    Raises ``OSError`` when the files cannot be written.
    """
    names = list(hostnames)
    addresses = [ipaddress.ip_address(address) for address in ip_addresses]
    if not names and not addresses:
        raise ValueError("need at least one host name or IP address")
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = _self_signed_certificate(key, names, addresses, days)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # The key first: a crash in between leaves a mismatched pair, which
    # load_server_certificate reports, never an old key exposed.
    write_file_atomically(Path(key_path), key_pem, mode=0o600)
    write_file_atomically(
        Path(cert_path), certificate.public_bytes(serialization.Encoding.PEM), mode=0o644
    )


def _self_signed_certificate(
    key: ec.EllipticCurvePrivateKey,
    hostnames: list[str],
    addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address],
    days: int,
) -> x509.Certificate:
    common_name = hostnames[0] if hostnames else str(addresses[0])
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "popframe self-signed"),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    alternative_names: list[x509.GeneralName] = [x509.DNSName(host) for host in hostnames]
    alternative_names += [x509.IPAddress(address) for address in addresses]
    key_id = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1)
        .not_valid_before(now - datetime.timedelta(hours=1))  # tolerate clock skew
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alternative_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        # Both identifiers: Python 3.13's default VERIFY_X509_STRICT wants them.
        .add_extension(key_id, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(key_id),
            critical=False,
        )
    )
    return builder.sign(key, hashes.SHA256())


def harden_endpoint(endpoint: object) -> object:
    """Give an ``ssl:`` server endpoint (also behind ``haproxy:``) the same
    TLS policy as STLS: TLS 1.2 at least and :data:`CIPHERS`.  Twisted's
    ``ssl:`` parser builds ``CertificateOptions`` with its defaults, which
    accept static-RSA key exchange.  Other endpoints are left alone."""
    inner = wrapped_endpoint(endpoint)
    if inner is not None:
        harden_endpoint(inner)
    options = tls_options(endpoint)
    if type(options) is CertificateOptions:
        hardened = CertificateOptions(
            privateKey=options.privateKey,
            certificate=options.certificate,
            extraCertChain=options.extraCertChain,
            dhParameters=options.dhParameters,
            raiseMinimumTo=MINIMUM_TLS_VERSION,
            acceptableCiphers=acceptable_ciphers(),
            enableSessionTickets=SESSION_TICKETS,
        )
        hardened.getContext()  # OpenSSL's objections at start-up, not at a client
        replace_tls_options(endpoint, hardened)
    return endpoint

"""TLS options from PEM files, checked with real handshakes in memory.

The server side is the context popframe builds (pyOpenSSL's bundled
OpenSSL); the client is Python's ``ssl`` module (the system OpenSSL), so the
two meet as independent implementations would.  Both run over memory BIOs:
no sockets, no threads, no timing.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import stat
import warnings
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet.ssl import CertificateOptions

from popframe.config import ConfigurationError
from popframe.tls import (
    ServerCertificate,
    certificate_options,
    load_server_certificate,
    load_tls_options,
    make_self_signed,
)

pytestmark = pytest.mark.core

# -- helpers -------------------------------------------------------------------


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: object, password: bytes | None = None) -> bytes:
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def _certificate(
    subject: str,
    key: object,
    issuer: tuple[str, object] | None = None,
    *,
    ca: bool = False,
    san: str | None = None,
) -> x509.Certificate:
    """A certificate for ``subject`` signed by ``issuer`` (name, key), or
    self-signed."""
    issuer_name, issuer_key = issuer or (subject, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())  # type: ignore[attr-defined]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()),  # type: ignore[attr-defined]
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(
                issuer_key.public_key()  # type: ignore[attr-defined]
            ),
            critical=False,
        )
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
    if san:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())  # type: ignore[arg-type]


class Chain:
    """root -> intermediate -> leaf for 'pop.example.test'."""

    def __init__(self) -> None:
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.intermediate_key = ec.generate_private_key(ec.SECP256R1())
        self.leaf_key = ec.generate_private_key(ec.SECP256R1())
        self.root = _certificate("Test Root", self.root_key, ca=True)
        self.intermediate = _certificate(
            "Test Intermediate", self.intermediate_key, ("Test Root", self.root_key), ca=True
        )
        self.leaf = _certificate(
            "pop.example.test",
            self.leaf_key,
            ("Test Intermediate", self.intermediate_key),
            san="pop.example.test",
        )


def _server_context(options: CertificateOptions) -> SSL.Context:
    return options.getContext()


def _client_context(
    version: ssl.TLSVersion | None = None, cafile: Path | None = None, cadata: bytes | None = None
) -> ssl.SSLContext:
    if cafile is None and cadata is None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(
            cafile=cafile, cadata=cadata.decode() if cadata else None
        )
        # What Python 3.13 turns on by default; be as strict on 3.11.
        context.verify_flags |= ssl.VERIFY_X509_STRICT
    if version is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1_1 is deprecated
            context.minimum_version = version
            context.maximum_version = version
        if version < ssl.TLSVersion.TLSv1_2:
            # OpenSSL 3 refuses TLS < 1.2 below security level 0: let the
            # client really offer it, so only the server can say no.
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


def handshake(
    server_context: SSL.Context, client_context: ssl.SSLContext, server_name: str = "localhost"
) -> tuple[str, str]:
    """Run a TLS handshake between the two in memory; return the protocol
    version each side negotiated.  Raises the side's error on failure."""
    to_client, to_server = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_context.wrap_bio(to_client, to_server, server_hostname=server_name)
    server = SSL.Connection(server_context, None)
    server.set_accept_state()
    client_done = server_done = False
    for _ in range(10):
        if not client_done:
            try:
                client.do_handshake()
                client_done = True
            except ssl.SSLWantReadError:
                pass
        if data := to_server.read():
            server.bio_write(data)
        if not server_done:
            try:
                server.do_handshake()
                server_done = True
            except SSL.WantReadError:
                pass
        try:
            data = server.bio_read(1 << 16)
        except SSL.WantReadError:
            data = b""
        if data:
            to_client.write(data)
        if client_done and server_done:
            version = client.version()
            assert version is not None
            return version, server.get_protocol_version_name()
    raise AssertionError("the handshake made no progress")


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("self-signed")
    cert, key = directory / "cert.pem", directory / "key.pem"
    make_self_signed(cert, key)
    return cert, key


@pytest.fixture(scope="module")
def chain() -> Chain:
    return Chain()


@pytest.fixture(autouse=True)
def _warnings_are_errors():
    """pyOpenSSL deprecations (its own X509/PKey types) must not appear."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# -- make_self_signed --------------------------------------------------------------


def test_self_signed_files(self_signed: tuple[Path, Path]) -> None:
    cert_path, key_path = self_signed
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert datetime.timedelta(days=825) <= lifetime <= datetime.timedelta(days=826)
    assert sorted(p.name for p in cert_path.parent.iterdir()) == ["cert.pem", "key.pem"]


def test_self_signed_names(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    make_self_signed(cert, key, hostnames=("pop.example.test", "mail.example.test"),
                     ip_addresses=(), days=3)
    certificate = x509.load_pem_x509_certificate(cert.read_bytes())
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["pop.example.test", "mail.example.test"]
    assert san.get_values_for_type(x509.IPAddress) == []


@pytest.mark.parametrize("server_name", ["localhost", "127.0.0.1", "::1"])
def test_self_signed_verifies_as_its_own_trust_anchor(
    self_signed: tuple[Path, Path], server_name: str
) -> None:
    """What the demo tells users to do: curl --cacert cert.pem, or
    ssl.create_default_context(cafile=cert.pem), with strict checks."""
    cert, key = self_signed
    server = _server_context(load_tls_options(str(cert), str(key)))
    handshake(server, _client_context(cafile=cert), server_name)


def test_self_signed_is_refused_for_another_name(self_signed: tuple[Path, Path]) -> None:
    cert, key = self_signed
    server = _server_context(load_tls_options(str(cert), str(key)))
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(server, _client_context(cafile=cert), "pop.example.test")


# -- loading -----------------------------------------------------------------------


def test_load_separate_files(self_signed: tuple[Path, Path]) -> None:
    cert, key = self_signed
    options = load_tls_options(str(cert), str(key))
    assert isinstance(options, CertificateOptions)
    assert isinstance(options.getContext(), SSL.Context)
    assert options.extraCertChain == []


def test_load_key_from_the_certificate_file(self_signed: tuple[Path, Path], tmp_path: Path) -> None:
    cert, key = self_signed
    combined = tmp_path / "combined.pem"
    combined.write_bytes(cert.read_bytes() + key.read_bytes())
    options = load_tls_options(str(combined))
    assert version_pair(options) == ("TLSv1.3", "TLSv1.3")


def test_key_before_certificate_in_one_file(self_signed: tuple[Path, Path], tmp_path: Path) -> None:
    cert, key = self_signed
    combined = tmp_path / "combined.pem"
    combined.write_bytes(key.read_bytes() + cert.read_bytes())
    load_tls_options(str(combined))


def test_traditional_rsa_key(tmp_path: Path) -> None:
    """``BEGIN RSA PRIVATE KEY`` files, as older tools write them."""
    key = rsa.generate_private_key(65537, 2048)
    certificate = _certificate("localhost", key)
    (tmp_path / "c.pem").write_bytes(_pem(certificate))
    (tmp_path / "k.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    options = load_tls_options(str(tmp_path / "c.pem"), str(tmp_path / "k.pem"))
    assert version_pair(options)[0] == "TLSv1.3"


def test_chain_is_sent(chain: Chain, tmp_path: Path) -> None:
    """A client that trusts only the root can verify the leaf: the
    intermediate went out as extraCertChain."""
    (tmp_path / "fullchain.pem").write_bytes(_pem(chain.leaf) + _pem(chain.intermediate))
    (tmp_path / "key.pem").write_bytes(_key_pem(chain.leaf_key))
    options = load_tls_options(str(tmp_path / "fullchain.pem"), str(tmp_path / "key.pem"))
    assert options.certificate == chain.leaf
    assert options.extraCertChain == [chain.intermediate]
    client = _client_context(cadata=_pem(chain.root))
    handshake(_server_context(options), client, "pop.example.test")


def test_leaf_alone_does_not_verify(chain: Chain, tmp_path: Path) -> None:
    """The control for test_chain_is_sent."""
    (tmp_path / "leaf.pem").write_bytes(_pem(chain.leaf) + _key_pem(chain.leaf_key))
    options = load_tls_options(str(tmp_path / "leaf.pem"))
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(_server_context(options), _client_context(cadata=_pem(chain.root)),
                  "pop.example.test")


def test_chain_in_the_wrong_order(chain: Chain, tmp_path: Path) -> None:
    (tmp_path / "chain.pem").write_bytes(_pem(chain.intermediate) + _pem(chain.leaf))
    (tmp_path / "key.pem").write_bytes(_key_pem(chain.leaf_key))
    with pytest.raises(ConfigurationError) as caught:
        load_tls_options(str(tmp_path / "chain.pem"), str(tmp_path / "key.pem"))
    assert caught.value.key == "--tls-cert"
    assert "matches certificate #2" in caught.value.problem
    assert "first" in caught.value.problem


def test_server_certificate_for_sni_maps(chain: Chain, tmp_path: Path) -> None:
    (tmp_path / "chain.pem").write_bytes(_pem(chain.leaf) + _pem(chain.intermediate))
    (tmp_path / "key.pem").write_bytes(_key_pem(chain.leaf_key))
    loaded = load_server_certificate(tmp_path / "chain.pem", tmp_path / "key.pem")
    assert loaded == ServerCertificate(chain.leaf, loaded.private_key, (chain.intermediate,))
    assert isinstance(certificate_options(loaded), CertificateOptions)


# -- errors ------------------------------------------------------------------------


def _error(cert: Path | str, key: Path | str | None = None) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as caught:
        load_tls_options(str(cert), None if key is None else str(key))
    return caught.value


def test_mismatched_key(self_signed: tuple[Path, Path], tmp_path: Path) -> None:
    cert, _ = self_signed
    other = tmp_path / "other.pem"
    other.write_bytes(_key_pem(ec.generate_private_key(ec.SECP256R1())))
    error = _error(cert, other)
    assert error.key == "--tls-key"
    assert "private key does not match certificate" in error.problem
    assert str(error).startswith("--tls-key: ")


def test_mismatched_key_in_the_certificate_file(
    self_signed: tuple[Path, Path], tmp_path: Path
) -> None:
    cert, _ = self_signed
    combined = tmp_path / "combined.pem"
    combined.write_bytes(cert.read_bytes() + _key_pem(ec.generate_private_key(ec.SECP256R1())))
    error = _error(combined)
    assert error.key == "--tls-cert"
    assert "does not match" in error.problem


def test_missing_certificate(tmp_path: Path) -> None:
    error = _error(tmp_path / "nope.pem", tmp_path / "key.pem")
    assert error.key == "--tls-cert"
    assert error.problem == f"cannot read {tmp_path / 'nope.pem'}: No such file or directory"


def test_missing_key(self_signed: tuple[Path, Path], tmp_path: Path) -> None:
    cert, _ = self_signed
    error = _error(cert, tmp_path / "nope.pem")
    assert error.key == "--tls-key"
    assert f"cannot read {tmp_path / 'nope.pem'}" in error.problem


def test_certificate_is_an_empty_directory(tmp_path: Path) -> None:
    """A directory is a set of SNI pairs (popframe.sni); an empty one is a mistake."""
    error = _error(tmp_path)
    assert error.key == "--tls-cert"
    assert "no *.pem file in the directory" in error.problem


def test_no_key_anywhere(self_signed: tuple[Path, Path]) -> None:
    cert, _ = self_signed
    error = _error(cert)
    assert error.key == "--tls-cert"
    assert "no private key" in error.problem and "--tls-key" in error.problem


def test_key_file_without_a_key(self_signed: tuple[Path, Path]) -> None:
    cert, _ = self_signed
    error = _error(cert, cert)
    assert error.key == "--tls-key"
    assert "no PEM private key" in error.problem


@pytest.mark.parametrize(
    "content",
    [b"", b"hello\n", b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"],
)
def test_not_a_certificate(content: bytes, self_signed: tuple[Path, Path], tmp_path: Path) -> None:
    _, key = self_signed
    (tmp_path / "bad.pem").write_bytes(content)
    error = _error(tmp_path / "bad.pem", key)
    assert error.key == "--tls-cert"
    assert str(tmp_path / "bad.pem") in error.problem


def test_corrupt_key(self_signed: tuple[Path, Path], tmp_path: Path) -> None:
    cert, _ = self_signed
    (tmp_path / "bad.pem").write_bytes(
        b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"
    )
    error = _error(cert, tmp_path / "bad.pem")
    assert error.key == "--tls-key"
    assert "invalid PEM private key" in error.problem


def test_encrypted_key(self_signed: tuple[Path, Path], tmp_path: Path) -> None:
    cert, key = self_signed
    loaded = serialization.load_pem_private_key(key.read_bytes(), None)
    (tmp_path / "encrypted.pem").write_bytes(_key_pem(loaded, b"secret"))
    error = _error(cert, tmp_path / "encrypted.pem")
    assert error.key == "--tls-key"
    assert "encrypted" in error.problem


def test_key_too_weak_for_openssl(tmp_path: Path) -> None:
    """OpenSSL's objection shows at start-up, not at the first handshake."""
    key = rsa.generate_private_key(65537, 1024)
    (tmp_path / "weak.pem").write_bytes(_pem(_certificate("weak", key)) + _key_pem(key))
    error = _error(tmp_path / "weak.pem")
    assert error.key == "--tls-cert"
    assert "OpenSSL refuses" in error.problem


# -- protocol versions -------------------------------------------------------------


def version_pair(options: CertificateOptions, version: ssl.TLSVersion | None = None) -> tuple[str, str]:
    return handshake(_server_context(options), _client_context(version))


@pytest.mark.parametrize(
    ("version", "name"),
    [(ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")],
)
def test_tls_1_2_and_1_3_accepted(
    self_signed: tuple[Path, Path], version: ssl.TLSVersion, name: str
) -> None:
    options = load_tls_options(*map(str, self_signed))
    assert version_pair(options, version) == (name, name)


@pytest.mark.parametrize("name", ["TLSv1", "TLSv1_1"])
def test_old_tls_refused(self_signed: tuple[Path, Path], name: str) -> None:
    cert, key = self_signed
    version = getattr(ssl.TLSVersion, name)
    options = load_tls_options(str(cert), str(key))
    with pytest.raises((ssl.SSLError, SSL.Error)) as caught:
        version_pair(options, version)
    assert "protocol" in str(caught.value).lower()

    # The control: the same client does get through to a server that allows
    # the old version, so the refusal above was the server's doing.
    permissive = SSL.Context(SSL.TLS_METHOD)
    loaded = load_server_certificate(cert, key)
    permissive.use_certificate(loaded.certificate)
    permissive.use_privatekey(loaded.private_key)
    permissive.set_min_proto_version(0)
    permissive.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
    try:
        negotiated = handshake(permissive, _client_context(version))
    except (ssl.SSLError, SSL.Error) as error:
        pytest.skip(f"this OpenSSL cannot speak {name} at all: {error}")
    assert negotiated[0] == name.replace("_", ".")

"""EXTERNAL (RFC 4422 appendix A) with TLS client certificates: the core,
the certificate checker and its plugin, the TLS options that ask for
client certificates, the server in memory, and curl and Python's ssl over
real sockets."""

from __future__ import annotations

import datetime
import poplib
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL
from twisted.internet.address import IPv4Address

from popframe.auth.clientcert import (
    ClientCertificateChecker,
    ClientCertificateCheckerFactory,
    identities,
)
from popframe.auth.credentials import ClientCertificate
from popframe.config import ConfigurationError
from popframe.protocol import Authenticate, Session, SessionConfig, sasl
from popframe.server import ServerConfig
from popframe.tap import Options
from popframe.testing import MemoryStore, connect_in_memory, failure_of, result_of
from popframe.testing.session import b64, replies
from popframe.tls import load_client_cas, load_tls_options

pytestmark = pytest.mark.core

ALICE = "alice@example.org"
FAILED = b"-ERR [AUTH] authentication failed\r\n"



# -- certificates ---------------------------------------------------------------------


class CA:
    """A certificate authority for client certificates."""

    def __init__(self, name: str = "popframe test client CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        ski = x509.SubjectKeyIdentifier.from_public_key(self.key.public_key())
        self.ski = ski
        self.certificate = (
            self._builder(self.name, self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(self.key, hashes.SHA256())
        )

    def _builder(self, subject: x509.Name, public_key: object) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.name)
            .public_key(public_key)  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=30))
        )

    def issue(self, cn: str | None = "Alice", emails: tuple[str, ...] = (ALICE,),
              dns: tuple[str, ...] = (), eku: tuple[x509.ObjectIdentifier, ...] | None = (
                  ExtendedKeyUsageOID.CLIENT_AUTH,), subject_email: str | None = None,
              ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        attributes = []
        if cn is not None:
            attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
        if subject_email is not None:
            attributes.append(x509.NameAttribute(NameOID.EMAIL_ADDRESS, subject_email))
        builder = self._builder(x509.Name(attributes), key.public_key()).add_extension(
            x509.BasicConstraints(ca=False, path_length=None), critical=True
        ).add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(self.ski), critical=False
        ).add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        names = [x509.RFC822Name(e) for e in emails] + [x509.DNSName(d) for d in dns]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        if eku is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
        return builder.sign(self.key, hashes.SHA256()), key

    def write(self, path: Path) -> Path:
        path.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))
        return path


def write_pair(directory: Path, name: str, certificate: x509.Certificate, key: object) -> tuple[Path, Path]:
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


@pytest.fixture(scope="module")
def ca() -> CA:
    return CA()



# -- the core -------------------------------------------------------------------------------


def tls_session(tls: bool = True, certificate: bool = True) -> Session:
    return Session(SessionConfig(mechanisms=("EXTERNAL",), tls_active=tls,
                                 client_certificate=lambda: certificate))


def test_offered_only_over_tls_to_a_client_with_a_certificate() -> None:
    for session in (tls_session(tls=False), tls_session(certificate=False)):
        [capa] = replies(session, b"CAPA\r\n")
        assert b"EXTERNAL" not in capa
        assert replies(session, b"AUTH EXTERNAL =\r\n") == [b"-ERR unsupported SASL mechanism\r\n"]
    [capa] = replies(tls_session(), b"CAPA\r\n")
    assert b"\r\nSASL EXTERNAL\r\n" in capa


def test_empty_authzid() -> None:
    [event] = replies(tls_session(), b"AUTH EXTERNAL =\r\n")
    assert event == Authenticate(sasl.External(None), "EXTERNAL")


def test_authzid_after_an_empty_challenge() -> None:
    s = tls_session()
    assert replies(s, b"AUTH EXTERNAL\r\n") == [b"+ \r\n"]
    [event] = replies(s, b64(ALICE.encode()) + b"\r\n")
    assert event == Authenticate(sasl.External(ALICE), "EXTERNAL")
    s = tls_session()
    replies(s, b"AUTH EXTERNAL\r\n")
    [event] = replies(s, b"\r\n")
    assert event == Authenticate(sasl.External(None), "EXTERNAL")


@pytest.mark.parametrize("authzid", [b"\xff", b"a\0b"])
def test_malformed_authzid_fails(authzid: bytes) -> None:
    assert replies(tls_session(), b"AUTH EXTERNAL " + b64(authzid) + b"\r\n") == [FAILED]


# -- the checker -----------------------------------------------------------------------------


def test_identities(ca: CA) -> None:
    certificate, _ = ca.issue(cn="Alice Liddell", emails=(ALICE, "a@example.net"), dns=("dev1.example.org",))
    assert identities(certificate, "email") == [ALICE, "a@example.net"]
    assert identities(certificate, "cn") == ["Alice Liddell"]
    assert identities(certificate, "dns") == ["dev1.example.org"]
    legacy, _ = ca.issue(emails=(), subject_email="old@example.org")
    assert identities(legacy, "email") == ["old@example.org"]
    assert identities(legacy, "dns") == []


def test_checker_maps_the_certificate_to_a_user(ca: CA) -> None:
    certificate, _ = ca.issue(cn="alice", emails=(ALICE, "a@example.net"))
    email, cn = ClientCertificateChecker("email"), ClientCertificateChecker("cn")
    assert result_of(email.requestAvatarId(ClientCertificate(certificate, None))) == ALICE.encode()
    assert result_of(email.requestAvatarId(ClientCertificate(certificate, "a@example.net"))) == b"a@example.net"
    assert result_of(cn.requestAvatarId(ClientCertificate(certificate, None))) == b"alice"
    assert result_of(cn.requestAvatarId(ClientCertificate(certificate, "alice"))) == b"alice"


@pytest.mark.parametrize(
    ("issue", "mapping", "authzid"),
    [
        (lambda ca: ca.issue(), "email", "bob@example.org"),  # not the certificate's
        (lambda ca: ca.issue(), "email", "Alice@example.org"),  # exact only
        (lambda ca: ca.issue(emails=()), "email", None),  # no identity of the kind
        (lambda ca: ca.issue(cn=None), "cn", None),
        (lambda ca: ca.issue(), "dns", None),
        (lambda ca: ca.issue(eku=(ExtendedKeyUsageOID.SERVER_AUTH,)), "email", None),
        (lambda ca: (None, None), "email", None),  # no certificate at all
    ],
)
def test_checker_refusals(ca: CA, issue, mapping: str, authzid: str | None) -> None:
    certificate, _ = issue(ca)
    failure = failure_of(ClientCertificateChecker(mapping).requestAvatarId(ClientCertificate(certificate, authzid)))
    from twisted.cred.error import UnauthorizedLogin

    assert failure.check(UnauthorizedLogin)  # type: ignore[attr-defined]


def test_certificates_without_extended_key_usage_are_accepted(ca: CA) -> None:
    certificate, _ = ca.issue(eku=None)
    assert result_of(ClientCertificateChecker().requestAvatarId(ClientCertificate(certificate, None))) == ALICE.encode()


def test_factory() -> None:
    factory = ClientCertificateCheckerFactory()
    assert factory.generateChecker("").mapping == "email"
    assert factory.generateChecker("map=cn").mapping == "cn"
    assert factory.generateChecker("map=DNS").mapping == "dns"
    with pytest.raises(ConfigurationError, match="map must be one of email, cn, dns"):
        factory.generateChecker("map=uid")
    with pytest.raises(ConfigurationError, match="unknown option 'ca'"):
        factory.generateChecker("ca=/etc/ca.pem")


def test_the_plugin_is_found() -> None:
    from twisted.cred import strcred

    assert isinstance(strcred.findCheckerFactory("tls-cert"), ClientCertificateCheckerFactory)


# -- TLS options and the command line ----------------------------------------------------------


def test_tls_options_ask_for_optional_client_certificates(mail_home, ca: CA, tmp_path: Path) -> None:
    ca_path = ca.write(tmp_path / "client-ca.pem")
    options = load_tls_options(str(mail_home.cert), str(mail_home.key), str(ca_path))
    context = options.getContext()
    assert context.get_verify_mode() == SSL.VERIFY_PEER | SSL.VERIFY_CLIENT_ONCE  # not FAIL_IF_NO_PEER_CERT
    plain = load_tls_options(str(mail_home.cert), str(mail_home.key)).getContext()
    assert plain.get_verify_mode() == SSL.VERIFY_NONE


@pytest.mark.parametrize(
    ("content", "problem"),
    [(None, "cannot read"), (b"hello", "no PEM certificate"),
     (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "invalid PEM certificate")],
)
def test_bad_client_ca_files(tmp_path: Path, content: bytes | None, problem: str) -> None:
    path = tmp_path / "ca.pem"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigurationError, match=problem) as info:
        load_client_cas(path)
    assert info.value.key == "--tls-client-ca"


def test_command_line(mail_home, ca: CA, tmp_path: Path) -> None:
    ca_path = ca.write(tmp_path / "client-ca.pem")
    base = ["--listen", "tcp:0", "--store", f"maildir:{mail_home.template}",
            "--auth", f"passwd-file:{mail_home.passwd_file}"]
    options = Options()
    options.parseOptions([*base, "--auth", "tls-cert:map=email", "--tls-cert", str(mail_home.cert),
                          "--tls-key", str(mail_home.key), "--tls-client-ca", str(ca_path)])
    assert options.tls.getContext().get_verify_mode() & SSL.VERIFY_PEER
    from twisted.python.usage import UsageError

    with pytest.raises(UsageError, match="--tls-client-ca: needs --tls-cert"):
        Options().parseOptions([*base, "--tls-client-ca", str(ca_path)])
    with pytest.raises(UsageError, match="--auth: tls-cert needs --tls-client-ca"):
        Options().parseOptions([*base, "--auth", "tls-cert", "--tls-cert", str(mail_home.cert),
                                "--tls-key", str(mail_home.key)])


# -- the whole server, in memory (a TLS transport that has a peer certificate) ----------------


class _Handle:
    def __init__(self, certificate: x509.Certificate | None) -> None:
        self.certificate = certificate

    def get_peer_certificate(self, *, as_cryptography: bool = False) -> x509.Certificate | None:
        assert as_cryptography
        return self.certificate


def connect_tls(certificate: x509.Certificate | None, mapping: str = "email", **config: object):
    store = MemoryStore({ALICE: [b"Subject: hi\r\n\r\nhello\r\n"], "alice": []})
    return connect_in_memory(store, ClientCertificateChecker(mapping), ServerConfig(**config),  # type: ignore[arg-type]
                             peer=IPv4Address("TCP", "192.0.2.1", 50000),
                             tls_handle=_Handle(certificate)).send


@pytest.mark.adapter
def test_in_memory_login_with_a_certificate(ca: CA) -> None:
    certificate, _ = ca.issue()
    send = connect_tls(certificate)
    assert b"\r\nSASL EXTERNAL\r\n" in send(b"CAPA\r\n")
    assert send(b"AUTH EXTERNAL =\r\n") == b"+OK maildrop has 1 messages (22 octets)\r\n"
    send = connect_tls(certificate)
    assert send(b"AUTH EXTERNAL " + b64(ALICE.encode()) + b"\r\n").startswith(b"+OK maildrop has 1")
    send = connect_tls(ca.issue(cn="alice")[0], "cn")
    assert send(b"AUTH EXTERNAL =\r\n") == b"+OK maildrop has 0 messages (0 octets)\r\n"


@pytest.mark.adapter
def test_in_memory_refusals(ca: CA) -> None:
    certificate, _ = ca.issue()
    send = connect_tls(certificate)
    assert send(b"AUTH EXTERNAL " + b64(b"bob@example.org") + b"\r\n") == FAILED
    assert send(b"AUTH EXTERNAL =\r\n").startswith(b"+OK")  # the same connection, then right
    send = connect_tls(None)  # no certificate: EXTERNAL is not on offer
    assert b"EXTERNAL" not in send(b"CAPA\r\n")
    assert send(b"AUTH EXTERNAL =\r\n") == b"-ERR unsupported SASL mechanism\r\n"


@pytest.mark.adapter
def test_master_users_cannot_widen_a_certificate(ca: CA) -> None:
    certificate, _ = ca.issue()
    send = connect_tls(certificate, master_users=frozenset({ALICE}))
    assert send(b"AUTH EXTERNAL " + b64(b"alice") + b"\r\n") == FAILED


# -- real sockets ---------------------------------------------------------------------------------


@pytest.fixture
def external_server(mail_home, ca: CA, tmp_path: Path):
    from conftest import server_args, start_server

    ca_path = ca.write(tmp_path / "client-ca.pem")
    mail_home.add_user("bob", "bob password")
    for sub in ("new", "cur", "tmp"):
        (mail_home.maildir(ALICE) / sub).mkdir(parents=True, exist_ok=True)
    mail_home.deliver(ALICE, b"Subject: cert\r\n\r\nby certificate\r\n")
    args = server_args(mail_home, "--auth", "tls-cert:map=email", "--tls-client-ca", str(ca_path))
    server = start_server(args, mail_home.root, listeners=2)
    yield server
    server.stop()


@pytest.fixture
def alice_cert(ca: CA, tmp_path: Path) -> tuple[Path, Path]:
    return write_pair(tmp_path, "alice", *ca.issue())


def curl_external(mail_home, port: int, cert: tuple[Path, Path] | None, *extra: str):
    cert_args = ["--cert", str(cert[0]), "--key", str(cert[1])] if cert else []
    return subprocess.run(
        ["curl", "--silent", "--show-error", "--max-time", "20", "--verbose",
         "--cacert", str(mail_home.cert), "--ssl-reqd", *cert_args,
         "--login-options", "AUTH=EXTERNAL", *extra, f"pop3://127.0.0.1:{port}/1"],
        capture_output=True, timeout=30,
    )


needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is installed by tests/run.sh")


@pytest.mark.process
@needs_curl
@pytest.mark.parametrize("user", [None, ALICE])
def test_curl_external_over_stls(mail_home, external_server, alice_cert, user: str | None) -> None:
    # curl sends its user name as the authorization identity (none: "=").
    extra = ("--user", f"{user}:") if user else ()
    result = curl_external(mail_home, external_server.port, alice_cert, *extra)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert result.stdout == b"Subject: cert\r\n\r\nby certificate\r\n"
    assert b"> AUTH EXTERNAL" in result.stderr


@pytest.mark.process
@needs_curl
def test_curl_external_as_someone_else_is_denied(mail_home, external_server, alice_cert) -> None:
    result = curl_external(mail_home, external_server.port, alice_cert, "--user", "bob:")
    assert result.returncode == 67, result.stderr.decode(errors="replace")
    assert b"< -ERR [AUTH]" in result.stderr


def pop3_stls(mail_home, port: int, cert: tuple[Path, Path] | None) -> poplib.POP3:
    context = ssl.create_default_context(cafile=str(mail_home.cert))
    if cert:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    client = poplib.POP3("127.0.0.1", port, timeout=20)
    client.stls(context)
    return client


@pytest.mark.process
def test_python_ssl_external(mail_home, external_server, alice_cert) -> None:
    client = pop3_stls(mail_home, external_server.port, alice_cert)
    assert "EXTERNAL" in client.capa()["SASL"]
    assert client._shortcmd("AUTH EXTERNAL =").startswith(b"+OK maildrop has 1 messages")
    assert b"by certificate" in b"\r\n".join(client.retr(1)[1])
    client.quit()


@pytest.mark.process
def test_without_a_certificate_other_logins_still_work(mail_home, external_server) -> None:
    client = pop3_stls(mail_home, external_server.port, None)
    assert "EXTERNAL" not in client.capa().get("SASL", [])
    with pytest.raises(poplib.error_proto, match=r"unsupported SASL mechanism"):
        client._shortcmd("AUTH EXTERNAL =")
    client.user("bob")
    assert client.pass_("bob password").startswith(b"+OK")
    client.quit()


@pytest.mark.process
def test_not_offered_on_an_implicit_tls_listener(mail_home, external_server, alice_cert) -> None:
    """Twisted's ssl: endpoint asks for no client certificate, so EXTERNAL
    could never succeed there: it is not offered, even to a client that
    has one."""
    context = ssl.create_default_context(cafile=str(mail_home.cert))
    context.load_cert_chain(str(alice_cert[0]), str(alice_cert[1]))
    client = poplib.POP3_SSL("127.0.0.1", external_server.tls_port, context=context, timeout=20)
    try:
        assert "EXTERNAL" not in client.capa().get("SASL", [])
    finally:
        client.quit()


@pytest.mark.process
def test_a_certificate_from_another_ca_fails_the_handshake(mail_home, external_server, tmp_path: Path) -> None:
    stranger = write_pair(tmp_path, "stranger", *CA("some other CA").issue())
    context = ssl.create_default_context(cafile=str(mail_home.cert))
    context.load_cert_chain(str(stranger[0]), str(stranger[1]))
    client = poplib.POP3("127.0.0.1", external_server.port, timeout=20)
    try:
        with pytest.raises((ssl.SSLError, poplib.error_proto, ConnectionError, EOFError)) as info:
            # TLS 1.3: the client learns of the refusal at its next read.
            client.stls(context)
            client._shortcmd("AUTH EXTERNAL =")
    finally:
        client.close()
    assert "unknown ca" in str(info.value).lower() or not isinstance(info.value, poplib.error_proto)

"""TLS as clients meet it, checked with ``openssl s_client`` against a real
server: certificates chosen by SNI (STLS, ``implicit-tls:``, ``tls:``),
popframe's policy on every kind of TLS listener, OCSP stapling, and
client certificates (EXTERNAL) on implicit-TLS listeners."""

from __future__ import annotations

import datetime
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import MailHome, start_server
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL

from popframe.config import ConfigurationError
from popframe.ocsp import Staple
from popframe.sni import ServerNames, certificate_files, load_certificates
from popframe.testing import ServerProcess
from popframe.tls import load_tls_options

pytestmark = [pytest.mark.process, pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")]

ALICE = "alice@example.org"


# -- a test CA and its server certificates ---------------------------------------------


@dataclass
class Issued:
    cert: Path
    key: Path
    combined: Path  # certificate, then key: one file of a tls: directory
    certificate: x509.Certificate


class ServerCA:
    """A CA on disk (for ``openssl ocsp`` and ``-CAfile``) issuing RSA
    server certificates (RSA: a static-RSA key exchange would be possible
    with them, so a weak-cipher refusal is the policy's doing)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "popframe test CA")])
        self.certificate = (
            self._builder(self.name, self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_path = self._write("ca.pem", self.certificate.public_bytes(serialization.Encoding.PEM))
        self.key_path = self._write("ca.key", _key_pem(self.key))

    def _write(self, name: str, data: bytes, directory: Path | None = None) -> Path:
        path = (directory or self.directory) / name
        path.write_bytes(data)
        return path

    def _builder(self, subject: x509.Name, public_key: object) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.UTC)
        return (
            x509.CertificateBuilder().subject_name(subject).issuer_name(self.name)
            .public_key(public_key)  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=30))
        )

    def issue(self, cn: str, names: tuple[str, ...],
              key_usage: x509.ObjectIdentifier = ExtendedKeyUsageOID.SERVER_AUTH,
              email: str | None = None, directory: Path | None = None) -> Issued:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        alternative: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
        if email:
            alternative.append(x509.RFC822Name(email))
        builder = self._builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]),
                                key.public_key())
        builder = builder.add_extension(x509.ExtendedKeyUsage([key_usage]), critical=False)
        if alternative:
            builder = builder.add_extension(x509.SubjectAlternativeName(alternative),
                                            critical=False)
        certificate = builder.sign(self.key, hashes.SHA256())
        pem = certificate.public_bytes(serialization.Encoding.PEM)
        cert = self._write(f"{cn}.crt", pem, directory)
        key_path = self._write(f"{cn}.key", _key_pem(key), directory)
        combined = self._write(f"{cn}.combined", pem + _key_pem(key), directory)
        return Issued(cert, key_path, combined, certificate)

    def ocsp_response(self, issued: Issued, out: Path) -> Path:
        """A signed "good" response about ``issued``, as an operator makes
        one with ``openssl ocsp`` (a request, then the CA answering it from
        its index)."""
        serial = f"{issued.certificate.serial_number:X}"
        serial = serial if len(serial) % 2 == 0 else "0" + serial
        expiry = issued.certificate.not_valid_after_utc.strftime("%y%m%d%H%M%SZ")
        subject = "/" + issued.certificate.subject.rfc4514_string()
        index = self._write("index.txt", f"V\t{expiry}\t\t{serial}\tunknown\t{subject}\n".encode())
        request = self.directory / "request.der"
        run(["openssl", "ocsp", "-issuer", str(self.cert_path), "-cert", str(issued.cert),
             "-reqout", str(request), "-no_nonce"])
        run(["openssl", "ocsp", "-index", str(index), "-rsigner", str(self.cert_path),
             "-rkey", str(self.key_path), "-CA", str(self.cert_path), "-reqin", str(request),
             "-respout", str(out), "-ndays", "1"])
        return out


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode(errors="replace")


@dataclass
class Certificates:
    ca: ServerCA
    default: Issued  # pop.example.org
    other: Issued  # mail.example.net, *.example.com
    directory: Path  # both, as a tls: directory (default first by name)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    root = tmp_path_factory.mktemp("tls")
    ca = ServerCA(root)
    default = ca.issue("default", ("pop.example.org",))
    other = ca.issue("other", ("mail.example.net", "*.example.com"))
    directory = root / "certs"
    directory.mkdir()
    shutil.copy(default.combined, directory / "a-default.pem")
    shutil.copy(other.combined, directory / "b-other.pem")
    return Certificates(ca, default, other, directory)


# -- the name map, without sockets -----------------------------------------------------------


@pytest.mark.core
def test_names_pick_contexts_with_a_default() -> None:
    method = SSL.TLS_SERVER_METHOD
    exact, wild = SSL.Context(method), SSL.Context(method)
    names = ServerNames(["pop.example.org", "*.example.org"],
                        [(["mail.example.net", "pop.example.org"], exact),
                         (["*.example.com", "x.example.org"], wild)])
    assert names(b"mail.example.net") is exact
    assert names(b"MAIL.Example.NET.") is exact  # case and a final dot do not matter
    assert names(b"pop.example.com") is wild
    assert names(b"x.example.org") is wild  # exact beats the default's wildcard
    assert names(b"a.b.example.com") is None  # a wildcard is one label
    assert names(b"example.com") is None
    assert names(b"pop.example.org") is None  # the default's own (first given wins)
    assert names(b"unknown.example") is None and names(None) is None


@pytest.mark.core
def test_certificate_files_pair_keys_in_order(certs: Certificates) -> None:
    files = certificate_files(
        [str(certs.directory), str(certs.default.cert), str(certs.other.combined)],
        [str(certs.default.key)])
    assert files == [(str(certs.directory / "a-default.pem"), None),
                     (str(certs.directory / "b-other.pem"), None),
                     (str(certs.default.cert), str(certs.default.key)),
                     (str(certs.other.combined), None)]
    loaded = load_certificates([str(certs.directory)])
    assert [c.names for c in loaded] == [("pop.example.org",),
                                         ("mail.example.net", "*.example.com")]
    with pytest.raises(ConfigurationError, match="1 more --tls-key than --tls-cert files"):
        certificate_files([str(certs.default.cert)], [str(certs.default.key)] * 2)
    empty = certs.ca.directory / "empty"
    empty.mkdir(exist_ok=True)
    with pytest.raises(ConfigurationError, match="no \\*.pem file in the directory"):
        certificate_files([str(empty)])


@pytest.mark.core
def test_a_stale_staple_is_not_sent() -> None:
    assert Staple(b"der", None).current(10.0) == b"der"
    assert Staple(b"der", 20.0).current(10.0) == b"der"
    assert Staple(b"der", 20.0).current(20.0) == b""


@pytest.mark.core
def test_ocsp_responses_must_be_about_a_certificate(certs: Certificates, tmp_path: Path) -> None:
    response = certs.ca.ocsp_response(certs.other, tmp_path / "other.der")
    with pytest.raises(ConfigurationError, match="is about serial .* none of the --tls-cert"):
        load_tls_options([str(certs.default.cert)], [str(certs.default.key)],
                         ocsp_paths=[str(response)])
    garbage = tmp_path / "garbage.der"
    garbage.write_bytes(b"not DER")
    with pytest.raises(ConfigurationError, match="is not a DER OCSP response") as info:
        load_tls_options([str(certs.default.cert)], [str(certs.default.key)],
                         ocsp_paths=[str(garbage)])
    assert info.value.key == "--tls-ocsp-response"


# -- a real server ------------------------------------------------------------------------------


@dataclass
class Listeners:
    server: ServerProcess
    stls: int
    implicit: int
    tls_directory: int
    ssl: int


def subject(output: str) -> str:
    found = re.search(r"^subject=(.*)$", output, re.MULTILINE)
    assert found, output
    return found.group(1).replace(" ", "")


def s_client(port: int, *args: str, starttls: bool = False, send: bytes = b"QUIT\r\n",
             ) -> subprocess.CompletedProcess[str]:
    command = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *args]
    if starttls:
        command += ["-starttls", "pop3"]
    return subprocess.run(command, input=send.decode(), capture_output=True, text=True,
                          timeout=30)


def handshake_ok(result: subprocess.CompletedProcess[str]) -> bool:
    return result.returncode == 0 and "Cipher is (NONE)" not in result.stdout and bool(
        re.search(r"Cipher is \S+", result.stdout))


def tls_args(home: MailHome, certs: Certificates, *extra: str) -> list[str]:
    return [
        "--listen", "tcp:0:interface=127.0.0.1",
        "--listen", "implicit-tls:tcp:0:interface=127.0.0.1",
        "--listen", f"tls:{certs.directory}:0:interface=127.0.0.1",
        "--listen", (f"ssl:0:interface=127.0.0.1:privateKey={certs.other.key}"
                     f":certKey={certs.other.cert}"),
        "--store", f"maildir:{home.template}",
        "--auth", f"passwd-file:{home.passwd_file}",
        "--tls-cert", str(certs.default.cert), "--tls-key", str(certs.default.key),
        "--tls-cert", str(certs.other.cert), "--tls-key", str(certs.other.key),
        "--workers", "1", *extra,
    ]


def serve(home: MailHome, certs: Certificates, response: Path) -> Listeners:
    server = start_server(tls_args(home, certs, "--tls-ocsp-response", str(response)),
                          home.root, listeners=4)
    return Listeners(server, *server.ports[:4])


@pytest.fixture(scope="module")
def listeners(certs: Certificates, tmp_path_factory: pytest.TempPathFactory,
              ) -> Iterator[Listeners]:
    """One server for the tests that only connect."""
    home = MailHome(tmp_path_factory.mktemp("home"))
    home.passwd_file.touch()
    running = serve(home, certs, certs.ca.ocsp_response(certs.other, home.root / "other.der"))
    try:
        yield running
    finally:
        running.server.stop()


def logged(server: ServerProcess, text: str, seconds: float = 20) -> bool:
    """Whether ``text`` appears in the server's log within ``seconds``."""
    deadline = time.monotonic() + seconds
    while text not in server.log.read_text():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize("starttls", [True, False], ids=["stls", "implicit-tls"])
@pytest.mark.parametrize(("sni", "expected"), [
    ("mail.example.net", "CN=other"),
    ("pop.example.com", "CN=other"),  # the wildcard
    ("pop.example.org", "CN=default"),
    ("unknown.example", "CN=default"),
    (None, "CN=default"),
])
def test_sni_picks_the_certificate(listeners: Listeners, certs: Certificates, starttls: bool,
                                   sni: str | None, expected: str) -> None:
    port = listeners.stls if starttls else listeners.implicit
    name = ["-servername", sni] if sni else ["-noservername"]
    result = s_client(port, *name, "-CAfile", str(certs.ca.cert_path), starttls=starttls)
    assert handshake_ok(result), result.stdout + result.stderr
    assert subject(result.stdout) == expected
    assert "Verification: OK" in result.stdout or "Verify return code: 0 (ok)" in result.stdout


@pytest.mark.parametrize(("sni", "expected"), [
    ("mail.example.net", "CN=other"), ("unknown.example", "CN=default"), (None, "CN=default"),
])
def test_a_tls_directory_listener_picks_by_name_with_a_default(
        listeners: Listeners, sni: str | None, expected: str) -> None:
    name = ["-servername", sni] if sni else ["-noservername"]
    result = s_client(listeners.tls_directory, *name)
    assert handshake_ok(result), result.stdout + result.stderr
    assert subject(result.stdout) == expected


@pytest.mark.parametrize("kind", ["stls", "implicit", "tls_directory", "ssl"])
def test_every_tls_listener_has_the_policy(listeners: Listeners, kind: str) -> None:
    port = getattr(listeners, kind)
    starttls = kind == "stls"
    assert handshake_ok(s_client(port, "-tls1_2", starttls=starttls))
    old = s_client(port, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0", starttls=starttls)
    assert not handshake_ok(old), old.stdout
    # Static-RSA key exchange (no forward secrecy): Twisted's defaults take it.
    weak = s_client(port, "-tls1_2", "-cipher", "AES128-SHA256", starttls=starttls)
    assert not handshake_ok(weak), weak.stdout
    fine = s_client(port, "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256",
                    starttls=starttls)
    assert handshake_ok(fine), fine.stdout + fine.stderr


@pytest.mark.parametrize("starttls", [True, False], ids=["stls", "implicit-tls"])
def test_ocsp_staple_for_the_certificate_that_has_one(listeners: Listeners, starttls: bool,
                                                       ) -> None:
    port = listeners.stls if starttls else listeners.implicit
    stapled = s_client(port, "-status", "-servername", "mail.example.net", starttls=starttls)
    assert handshake_ok(stapled), stapled.stdout
    assert "OCSP Response Status: successful" in stapled.stdout
    assert "Cert Status: good" in stapled.stdout
    unstapled = s_client(port, "-status", "-servername", "pop.example.org", starttls=starttls)
    assert "OCSP response: no response sent" in unstapled.stdout


def test_sighup_reloads_every_pair_and_staple(certs: Certificates, mail_home: MailHome,
                                             tmp_path: Path) -> None:
    """Renew the second certificate on disk (same paths), SIGHUP: its old
    staple no longer matches, so the reload fails as a whole (the running
    pairs stay); with a fresh response the new certificate and staple are
    served for its names, on STLS and implicit TLS."""
    ca = certs.ca
    own = Certificates(ca, ca.issue("default", ("pop.example.org",), directory=tmp_path),
                       ca.issue("other", ("mail.example.net", "*.example.com"),
                                directory=tmp_path), certs.directory)
    response = ca.ocsp_response(own.other, tmp_path / "other.der")
    listeners = serve(mail_home, own, response)
    server = listeners.server
    try:
        _check_reload(listeners, own, tmp_path, response)
    finally:
        server.stop()


def _check_reload(listeners: Listeners, own: Certificates, tmp_path: Path,
                  response: Path) -> None:
    server = listeners.server
    renewed = own.ca.issue("other", ("mail.example.net", "*.example.com"), directory=tmp_path)
    assert renewed.cert == own.other.cert  # written over the served files
    server.process.send_signal(signal.SIGHUP)
    assert logged(server, "reload failed")
    assert "is about serial" in server.log.read_text()
    own.ca.ocsp_response(renewed, response)
    server.process.send_signal(signal.SIGHUP)
    assert logged(server, "reloaded:")
    for port, starttls in ((listeners.stls, True), (listeners.implicit, False)):
        result = s_client(port, "-status", "-servername", "mail.example.net", "-showcerts",
                          starttls=starttls)
        chain = result.stdout.split("Certificate chain", 1)[1]  # after the OCSP response
        served = x509.load_pem_x509_certificate(
            re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----",
                      chain, re.DOTALL).group(0).encode())  # type: ignore[union-attr]
        assert served.serial_number == renewed.certificate.serial_number
        assert "Cert Status: good" in result.stdout


# -- client certificates on implicit TLS ------------------------------------------------------


def test_external_on_implicit_tls_listeners(mail_home: MailHome, certs: Certificates) -> None:
    """``implicit-tls:`` asks for client certificates with --tls-client-ca
    (as STLS does), an ``ssl:`` listener with its own ``clientCA=``: AUTH
    EXTERNAL works on both; a plain ``ssl:`` listener still asks for none."""
    alice = certs.ca.issue("alice", (), ExtendedKeyUsageOID.CLIENT_AUTH, email=ALICE)
    for sub in ("new", "cur", "tmp"):
        (mail_home.maildir(ALICE) / sub).mkdir(parents=True, exist_ok=True)
    mail_home.deliver(ALICE, b"Subject: cert\r\n\r\nby certificate\r\n")
    mail_home.add_user("bob", "bob password")
    args = [
        "--listen", "implicit-tls:tcp:0:interface=127.0.0.1",
        "--listen", (f"ssl:0:interface=127.0.0.1:privateKey={certs.default.key}"
                     f":certKey={certs.default.cert}:clientCA={certs.ca.cert_path}"),
        "--listen", (f"ssl:0:interface=127.0.0.1:privateKey={certs.default.key}"
                     f":certKey={certs.default.cert}"),
        "--store", f"maildir:{mail_home.template}",
        "--auth", f"passwd-file:{mail_home.passwd_file}", "--auth", "tls-cert:map=email",
        "--tls-cert", str(certs.default.cert), "--tls-key", str(certs.default.key),
        "--tls-client-ca", str(certs.ca.cert_path), "--workers", "1",
    ]
    server = start_server(args, mail_home.root, listeners=3)
    try:
        session = b"CAPA\r\nAUTH EXTERNAL =\r\nSTAT\r\nQUIT\r\n"
        client = ["-cert", str(alice.cert), "-key", str(alice.key), "-ign_eof", "-quiet"]
        for port in server.ports[:2]:
            result = s_client(port, *client, send=session)
            assert "SASL EXTERNAL" in result.stdout or " EXTERNAL" in result.stdout, result
            assert "+OK maildrop has 1 messages" in result.stdout, result.stdout
        result = s_client(server.ports[2], *client, send=session)
        assert "EXTERNAL" not in result.stdout.split("AUTH")[0]
        assert "-ERR unsupported SASL mechanism" in result.stdout
    finally:
        server.stop()


# -- endpoint strings -----------------------------------------------------------------------


def test_client_ca_is_popframes_own_argument(certs: Certificates, tmp_path: Path) -> None:
    from popframe.config.endpoints import bindable, check_endpoint, endpoint_files

    ssl_listener = (f"ssl:995:privateKey={certs.default.key}:certKey={certs.default.cert}"
                    f":clientCA={certs.ca.cert_path}")
    # What the workers' parent binds: Twisted's parsers know no clientCA=.
    assert bindable(f"implicit-tls:haproxy:{ssl_listener}:backlog=5") == (
        f"haproxy:ssl:995:privateKey={certs.default.key}:certKey={certs.default.cert}:backlog=5")
    assert str(certs.ca.cert_path) in endpoint_files(ssl_listener)  # a worker's snapshot
    assert endpoint_files(f"tls:{certs.directory}:995") == [
        str(certs.directory / "a-default.pem"), str(certs.directory / "b-other.pem")]
    with pytest.raises(ConfigurationError, match="clientCA: cannot read"):
        check_endpoint(f"tls:{certs.directory}:995:clientCA={tmp_path / 'none.pem'}")
    with pytest.raises(ConfigurationError, match="a tls: listener names a directory"):
        check_endpoint("tls:")


def test_check_config_takes_the_tls_keys(certs: Certificates, mail_home: MailHome,
                                        tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        ) -> None:
    from popframe.cli import main as popframe

    response = certs.ca.ocsp_response(certs.other, tmp_path / "other.der")
    config = tmp_path / "popframe.toml"
    config.write_text(
        f'listen = ["tcp:0:interface=127.0.0.1", "tls:{certs.directory}:0"]\n'
        f'store = "maildir:{mail_home.template}"\n'
        f'auth = ["passwd-file:{mail_home.passwd_file}"]\n'
        f'tls-cert = ["{certs.default.cert}", "{certs.other.cert}", "{certs.directory}"]\n'
        f'tls-key = ["{certs.default.key}", "{certs.other.key}"]\n'
        f'tls-ocsp-response = ["{response}"]\n')
    assert popframe(["check-config", str(config)]) == 0, capsys.readouterr().out
    config.write_text(config.read_text().replace(f'"{response}"', f'"{certs.default.cert}"'))
    assert popframe(["check-config", str(config)]) == 1
    assert "tls-ocsp-response" in capsys.readouterr().out


def test_the_expiry_metric_has_each_certificate_by_name(certs: Certificates,
                                                       tmp_path: Path) -> None:
    from popframe.ops.certificates import CertificateExpiry, certificate_paths

    directory = tmp_path / "certs"
    directory.mkdir()
    shutil.copy(certs.default.combined, directory / "a.pem")
    expiry = CertificateExpiry(lambda: certificate_paths(
        [str(directory)], [f"ssl:995:privateKey={certs.other.key}:certKey={certs.other.cert}"]))
    default = certs.default.certificate.not_valid_after_utc.timestamp()
    other = certs.other.certificate.not_valid_after_utc.timestamp()
    assert expiry.expiries() == {(str(directory / "a.pem"), "pop.example.org"): default,
                                 (str(certs.other.cert), "mail.example.net"): other}
    shutil.copy(certs.other.combined, directory / "b.pem")  # added, then SIGHUP
    assert expiry.expiries()[(str(directory / "b.pem"), "mail.example.net")] == other


def test_a_worker_finds_a_directorys_files_in_its_snapshot(
        certs: Certificates, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker (unprivileged) may not list a root-only directory: the
    files its parent read for it stand in for the listing."""
    from popframe.config import snapshot

    directory = str(certs.directory)
    files = [str(certs.directory / "a-default.pem"), str(certs.directory / "b-other.pem")]
    monkeypatch.setattr(snapshot, "SNAPSHOT", {f: Path(f).read_bytes() for f in files})

    def refused(path: str) -> list[str]:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("popframe.sni.os.listdir", refused)
    assert certificate_files([directory]) == [(f, None) for f in files]
    monkeypatch.setattr(snapshot, "SNAPSHOT", {})
    with pytest.raises(ConfigurationError, match="cannot list .*: Permission denied"):
        certificate_files([directory])


def test_with_workers(mail_home: MailHome, certs: Certificates) -> None:
    """--workers 2: the parent binds (no TLS, no clientCA=), each worker
    serves SNI, the policy and client certificates the same way."""
    from test_workers import start_pool

    alice = certs.ca.issue("alice", (), ExtendedKeyUsageOID.CLIENT_AUTH, email=ALICE,
                           directory=mail_home.root)
    for sub in ("new", "cur", "tmp"):
        (mail_home.maildir(ALICE) / sub).mkdir(parents=True, exist_ok=True)
    args = [
        "--listen", "implicit-tls:tcp:0:interface=127.0.0.1",
        "--listen", (f"ssl:0:interface=127.0.0.1:privateKey={certs.default.key}"
                     f":certKey={certs.default.cert}:clientCA={certs.ca.cert_path}"),
        "--listen", f"tls:{certs.directory}:0:interface=127.0.0.1",
        "--store", f"maildir:{mail_home.template}",
        "--auth", f"passwd-file:{mail_home.passwd_file}", "--auth", "tls-cert:map=email",
        "--tls-cert", str(certs.default.cert), "--tls-key", str(certs.default.key),
        "--tls-cert", str(certs.other.cert), "--tls-key", str(certs.other.key),
        "--tls-client-ca", str(certs.ca.cert_path),
    ]
    pool = start_pool(args, mail_home.root, 2)
    try:
        implicit, ssl_port, directory = (pool.port(i) for i in range(3))
        for port in (implicit, directory):
            chosen = s_client(port, "-servername", "pop.example.com")
            assert subject(chosen.stdout) == "CN=other"
            assert subject(s_client(port, "-noservername").stdout) == "CN=default"
            assert not handshake_ok(s_client(port, "-tls1_2", "-cipher", "AES128-SHA256"))
        result = s_client(ssl_port, "-cert", str(alice.cert), "-key", str(alice.key),
                          "-ign_eof", "-quiet", send=b"AUTH EXTERNAL =\r\nQUIT\r\n")
        assert "+OK maildrop has 0 messages" in result.stdout, result.stdout + result.stderr
    finally:
        pool.stop()


@pytest.mark.parametrize("kind", ["stls", "implicit", "tls_directory", "ssl"])
@pytest.mark.parametrize("sni", [None, "mail.example.net"])
def test_tls13_session_tickets_resume(listeners: Listeners, kind: str, sni: str | None,
                                      tmp_path: Path) -> None:
    """A polling client that reconnects skips the full handshake: every
    listener issues TLS 1.3 session tickets and accepts them back (with
    and without SNI switching the certificate)."""
    port = getattr(listeners, kind)
    name = ["-servername", sni] if sni else ["-noservername"]
    session = tmp_path / "session.pem"
    first = s_client(port, "-tls1_3", *name, "-ign_eof", "-sess_out", str(session),
                     starttls=kind == "stls")
    assert handshake_ok(first), first.stdout + first.stderr
    assert "New, TLSv1.3" in first.stdout
    assert session.exists(), first.stdout
    again = s_client(port, "-tls1_3", *name, "-ign_eof", "-sess_in", str(session),
                     starttls=kind == "stls")
    assert handshake_ok(again), again.stdout + again.stderr
    assert "Reused, TLSv1.3" in again.stdout, again.stdout

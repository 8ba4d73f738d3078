"""The TLS configuration, scanned with a real scanner (sslyze), and STLS
command injection over a real socket (issue 5, "Abuse").

sslyze pins an older ``cryptography`` than popframe needs, so it cannot
share the test environment: it runs as a command from its own virtualenv.
``tests/run.sh`` creates ``.venv-sslyze`` in the checkout; ``$SSLYZE``
names another command.  Without it these scans skip, except under
``CI=true``, where a missing scanner fails the run.

Both listeners are scanned, with an EC and with an RSA certificate
(static-RSA key exchange, which is not forward secret, is only possible
with an RSA key): implicit TLS (``ssl:``) and STLS (``--starttls pop3``).
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import MailHome, ServerProcess, server_args, start_server
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

pytestmark = pytest.mark.external

ROOT = Path(__file__).resolve().parent.parent
WEAK = ("NULL", "EXPORT", "RC4", "_DES_", "DES40", "3DES", "DES_CBC", "ANON", "_anon_",
        "MD5", "PSK", "SRP", "IDEA", "SEED", "CAMELLIA", "ARIA")
OLD_PROTOCOLS = ("ssl_2_0_cipher_suites", "ssl_3_0_cipher_suites", "tls_1_0_cipher_suites",
                 "tls_1_1_cipher_suites")


def sslyze_command() -> list[str] | None:
    configured = os.environ.get("SSLYZE")
    if configured:
        return configured.split()
    venv = ROOT / ".venv-sslyze" / "bin" / "sslyze"
    if venv.exists():
        return [str(venv)]
    found = shutil.which("sslyze")
    return [found] if found else None


@pytest.fixture(scope="module")
def sslyze() -> list[str]:
    command = sslyze_command()
    if command is None:
        message = "sslyze not found: bash tests/run.sh installs it in .venv-sslyze, or set $SSLYZE"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return command


def make_rsa_self_signed(cert: Path, key: Path) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(private.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(private, hashes.SHA256())
    )
    key.write_bytes(private.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


@pytest.fixture(params=["ec", "rsa"])
def tls_server(request: Any, mail_home: MailHome) -> Iterator[ServerProcess]:
    if request.param == "rsa":
        make_rsa_self_signed(mail_home.cert, mail_home.key)
    mail_home.add_user("alice", "alice password")
    server = start_server(server_args(mail_home), mail_home.root, listeners=2)
    yield server
    server.stop()
    assert "Traceback" not in server.log.read_text(errors="replace")


def scan(sslyze: list[str], port: int, tmp_path: Path, starttls: bool) -> dict[str, Any]:
    out = tmp_path / f"scan-{port}.json"
    command = [*sslyze, f"--json_out={out}", "--quiet", "--mozilla_config=disable",
               "--sslv2", "--sslv3", "--tlsv1", "--tlsv1_1", "--tlsv1_2", "--tlsv1_3",
               "--compression", "--reneg", "--heartbleed", "--openssl_ccs", "--robot",
               f"127.0.0.1:{port}"]
    if starttls:
        command += ["--starttls", "pop3"]
    subprocess.run(command, check=True, timeout=300, stdout=subprocess.DEVNULL)
    (result,) = json.loads(out.read_text())["server_scan_results"]
    assert result["scan_status"] == "COMPLETED", result.get("connectivity_error_trace")
    return result["scan_result"]


def accepted(result: dict[str, Any], protocol: str) -> list[dict[str, Any]]:
    attempt = result[protocol]
    assert attempt["status"] == "COMPLETED", attempt.get("error_trace")
    return attempt["result"]["accepted_cipher_suites"]


def check_scan(result: dict[str, Any]) -> None:
    for protocol in OLD_PROTOCOLS:
        names = [s["cipher_suite"]["name"] for s in accepted(result, protocol)]
        assert names == [], f"{protocol} accepted: {names}"
    suites = accepted(result, "tls_1_2_cipher_suites") + accepted(result, "tls_1_3_cipher_suites")
    assert accepted(result, "tls_1_3_cipher_suites"), "TLS 1.3 not offered"
    for suite in suites:
        cipher = suite["cipher_suite"]
        name = cipher["name"]
        assert not any(weak.upper() in name.upper() for weak in WEAK), name
        assert not cipher["is_anonymous"], name
        assert cipher["key_size"] >= 128, name
        # Forward secrecy: an ephemeral key exchange (every TLS 1.3 suite).
        assert name.startswith("TLS_ECDHE_") or name.startswith("TLS_DHE_") \
            or suite in accepted(result, "tls_1_3_cipher_suites"), name
        assert suite["ephemeral_key"] is not None, name
    assert result["tls_compression"]["result"]["supports_compression"] is False
    assert result["heartbleed"]["result"]["is_vulnerable_to_heartbleed"] is False
    assert result["openssl_ccs_injection"]["result"]["is_vulnerable_to_ccs_injection"] is False
    reneg = result["session_renegotiation"]["result"]
    assert reneg["is_vulnerable_to_client_renegotiation_dos"] is False
    assert reneg["supports_secure_renegotiation"] is True
    assert result["robot"]["result"]["robot_result"].startswith("NOT_VULNERABLE"), \
        result["robot"]["result"]


def test_implicit_tls_scan(sslyze: list[str], tls_server: ServerProcess, tmp_path: Path) -> None:
    check_scan(scan(sslyze, tls_server.tls_port, tmp_path, starttls=False))


def test_stls_scan(sslyze: list[str], tls_server: ServerProcess, tmp_path: Path) -> None:
    check_scan(scan(sslyze, tls_server.port, tmp_path, starttls=True))


# -- STLS command injection (RFC 2595; the CVE-2011-0411 class) -------------------


def read_line(sock: Any) -> bytes:
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            raise EOFError(data)
        data += chunk
    return data


@pytest.mark.process
@pytest.mark.parametrize("injected", [
    b"CAPA\r\n",
    b"USER alice\r\nPASS alice password\r\nSTAT\r\n",
    b"NOOP\r\nQUIT\r\n",
])
def test_stls_injection_in_the_same_segment_is_discarded(mail_home: MailHome,
                                                          injected: bytes) -> None:
    mail_home.add_user("alice", "alice password")
    server = start_server(server_args(mail_home, "--throttle-base", "0"), mail_home.root,
                          listeners=2)
    try:
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=20)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        assert read_line(raw).startswith(b"+OK")
        # One send, one TCP segment: STLS and the plaintext behind it.
        raw.sendall(b"STLS\r\n" + injected)
        assert read_line(raw) == b"+OK begin TLS negotiation\r\n"
        context = ssl.create_default_context(cafile=str(mail_home.cert))
        context.check_hostname = False
        tls = context.wrap_socket(raw, server_hostname="localhost")
        # The first reply inside TLS answers what we send now, not what
        # was injected before the handshake.
        tls.sendall(b"STAT\r\n")
        assert read_line(tls) == b"-ERR command not valid in this state\r\n"
        tls.sendall(b"CAPA\r\n")
        assert read_line(tls) == b"+OK capability list follows\r\n"
        lines = []
        while (line := read_line(tls)) != b".\r\n":
            lines.append(line)
        assert b"STLS\r\n" not in lines and b"USER\r\n" in lines
        tls.sendall(b"QUIT\r\n")
        assert read_line(tls).startswith(b"+OK")
        tls.close()
    finally:
        server.stop()
    assert "Traceback" not in server.log.read_text(errors="replace")

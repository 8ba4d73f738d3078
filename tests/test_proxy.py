"""The client's real address through the PROXY protocol (``haproxy:``
listeners): in the log lines, in the throttle's counts and in the
loopback rule, with PROXY v1 and v2 written by hand and sent by a real
HAProxy (``send-proxy``, ``send-proxy-v2``), over plain TCP, STLS and
implicit TLS (``implicit-tls:haproxy:tcp:``, the header before TLS)."""

from __future__ import annotations

import re
import socket
import ssl
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_support import haproxy, load_example
from conftest import MailHome

from popframe.testing import ServerProcess, start_server

pytestmark = pytest.mark.process


def proxy_v1(source: str, port: int) -> bytes:
    return f"PROXY TCP4 {source} 127.0.0.1 {port} 110\r\n".encode()


def proxy_v2(source: str, port: int) -> bytes:
    addresses = socket.inet_aton(source) + socket.inet_aton("127.0.0.1") + struct.pack(
        "!HH", port, 110)
    return (b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack("!H", len(addresses))
            + addresses)


HEADERS = {"v1": proxy_v1, "v2": proxy_v2}


class Lines:
    """A POP3 connection read line by line."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buffer = sock, b""

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            data = self.sock.recv(4096)
            if not data:
                return b""
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def command(self, text: str) -> bytes:
        self.sock.sendall(text.encode() + b"\r\n")
        return self.line()


def wait_for_log(server: ServerProcess, pattern: str, seconds: float = 10) -> re.Match[str]:
    deadline = time.monotonic() + seconds
    while True:
        found = re.search(pattern, server.log.read_text())
        if found:
            return found
        assert time.monotonic() < deadline, f"no {pattern!r} in the log"
        time.sleep(0.02)


@pytest.fixture
def proxied(mail_home: MailHome) -> Iterator[ServerProcess]:
    """A server whose listeners are haproxy:tcp: (STLS) and
    implicit-tls:haproxy:tcp:, counting every address (trusted: none)."""
    mail_home.add_user("alice", "alice password")
    server = start_server([
        "--listen", "haproxy:tcp:0:interface=127.0.0.1",
        "--listen", "implicit-tls:haproxy:tcp:0:interface=127.0.0.1",
        "--store", f"maildir:{mail_home.template}",
        "--auth", f"passwd-file:{mail_home.passwd_file}",
        "--tls-cert", str(mail_home.cert), "--tls-key", str(mail_home.key),
        "--trusted-networks", "none", "--max-ip-failures", "3", "--max-auth-failures", "100",
        "--throttle-base", "0.01", "--throttle-max", "0.02", "--workers", "1",
    ], mail_home.root, listeners=2)
    yield server
    server.stop()


def connect(port: int, header: bytes) -> Lines:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(header)
    lines = Lines(sock)
    assert lines.line().startswith(b"+OK")
    return lines


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_hand_written_header_names_the_client(proxied: ServerProcess, version: str) -> None:
    remote = connect(proxied.port, HEADERS[version]("198.51.100.7", 40007))
    # Not loopback: no plaintext login (the proxy itself is on loopback).
    assert remote.command("USER alice").startswith(b"-ERR plaintext authentication")
    remote.command("QUIT")
    wait_for_log(proxied, r"session ended user=- peer=198\.51\.100\.7:40007 ")
    local = connect(proxied.port, HEADERS[version]("127.0.0.5", 40005))
    # The loopback rule applies to the client the header names.
    assert local.command("USER alice").startswith(b"+OK")
    assert local.command("PASS alice password").startswith(b"+OK")
    local.command("QUIT")
    wait_for_log(proxied, r"login ok mechanism=USER user='alice' peer=127\.0\.0\.5:40005 ")
    wait_for_log(proxied, r"session ended user='alice' peer=127\.0\.0\.5:40005 ")


def test_throttle_counts_the_real_address(proxied: ServerProcess) -> None:
    for n in range(3):  # --max-ip-failures 3, from 127.0.0.7
        client = connect(proxied.port, proxy_v2("127.0.0.7", 41000 + n))
        assert client.command(f"USER nobody{n}").startswith(b"+OK")
        assert client.command("PASS wrong").startswith(b"-ERR [AUTH]")
        client.command("QUIT")
    blocked = connect(proxied.port, proxy_v2("127.0.0.7", 41010))
    assert blocked.command("USER alice").startswith(b"+OK")
    assert blocked.command("PASS alice password") == b"-ERR [AUTH] too many failures"
    other = connect(proxied.port, proxy_v1("127.0.0.8", 41011))  # same proxy, other client
    assert other.command("USER alice").startswith(b"+OK")
    assert other.command("PASS alice password").startswith(b"+OK")
    other.command("QUIT")


def test_implicit_tls_after_the_header(proxied: ServerProcess) -> None:
    sock = socket.create_connection(("127.0.0.1", proxied.tls_port), timeout=10)
    sock.sendall(proxy_v2("198.51.100.9", 40009))
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with context.wrap_socket(sock) as tls:
        lines = Lines(tls)
        assert lines.line().startswith(b"+OK")
        assert lines.command("USER alice").startswith(b"+OK")  # TLS: plaintext is fine
        assert lines.command("PASS alice password").startswith(b"+OK")
        lines.command("QUIT")
    wait_for_log(proxied, r"session ended user='alice' peer=198\.51\.100\.9:40009 "
                          r"listener=implicit-tls")


HAPROXY_CONFIG = """
defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend v2
    bind 127.0.0.1:{v2}
    default_backend v2
frontend v1
    bind 127.0.0.1:{v1}
    default_backend v1
frontend tls
    bind 127.0.0.1:{tls}
    default_backend tls
backend v2
    server popframe 127.0.0.1:{pop3} send-proxy-v2
backend v1
    server popframe 127.0.0.1:{pop3} send-proxy
backend tls
    server popframe 127.0.0.1:{pop3s} send-proxy-v2
"""


@pytest.fixture
def haproxy_ports(proxied: ServerProcess, tmp_path: Path) -> Iterator[dict[str, int]]:
    example = load_example()
    binary = haproxy()
    ports = {"v2": example.free_port(), "v1": example.free_port(), "tls": example.free_port()}
    config = tmp_path / "haproxy.cfg"
    config.write_text(HAPROXY_CONFIG.format(pop3=proxied.port, pop3s=proxied.tls_port, **ports))
    process = subprocess.Popen([binary, "-db", "-f", str(config)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        example.wait_until(lambda: all(example._accepts(p) for p in ports.values()), 30,
                           "haproxy listening")
        yield ports
    finally:
        example.stop_process(process)


def from_address(source: str, port: int) -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.settimeout(10)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock, sock.getsockname()[1]


@pytest.mark.external
@pytest.mark.parametrize("frontend", ["v2", "v1"])
def test_haproxy_send_proxy(proxied: ServerProcess, haproxy_ports: dict[str, int],
                            frontend: str) -> None:
    sock, source_port = from_address("127.0.0.9", haproxy_ports[frontend])
    with sock:
        lines = Lines(sock)
        assert lines.line().startswith(b"+OK")
        assert lines.command("USER alice").startswith(b"+OK")  # the loopback rule: the client's
        assert lines.command("PASS alice password").startswith(b"+OK")
        lines.command("QUIT")
    # HAProxy connects from 127.0.0.1; the log names the client.
    wait_for_log(proxied, rf"login ok mechanism=USER user='alice' peer=127\.0\.0\.9:{source_port} ")


@pytest.mark.external
def test_haproxy_in_front_of_implicit_tls(proxied: ServerProcess,
                                          haproxy_ports: dict[str, int]) -> None:
    sock, source_port = from_address("127.0.0.10", haproxy_ports["tls"])
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with context.wrap_socket(sock) as tls:
        lines = Lines(tls)
        assert lines.line().startswith(b"+OK")
        assert lines.command("USER alice").startswith(b"+OK")
        assert lines.command("PASS alice password").startswith(b"+OK")
        lines.command("QUIT")
    wait_for_log(proxied, rf"session ended user='alice' peer=127\.0\.0\.10:{source_port} "
                          r"listener=implicit-tls")

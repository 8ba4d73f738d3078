"""The limits at their edges: --max-connections (one count for all
workers), the per-address limit with --trusted-networks (exempt, and the
failure block too), clients behind a PROXY header or XCLIENT counted by
their own address, and -ERR [SYS/TEMP] with a close beyond every limit,
counted in the metrics.  In memory first, then a real twistd."""

from __future__ import annotations

import os
import re
import socket
import time
import urllib.request
from typing import Any

import pytest
from conftest import MailHome, server_args, start_server
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.task import Clock
from twisted.protocols.haproxy._wrapper import HAProxyWrappingFactory

from popframe.ops import MetricsRecorder, session_observer
from popframe.server import POP3Factory, ServerConfig
from popframe.server.limits import SharedConnectionCount, shared_count_segment
from popframe.testing import (
    BufferedTransport,
    MemoryChecker,
    MemoryStore,
    connect_transport,
    make_portal,
    result_of,
    wait_until,
)
from popframe.throttle import LOOPBACK, MemoryThrottleStore, Throttle, TrustedNetworks

pytestmark = pytest.mark.adapter

USERS = {"alice": "secret"}
LOGIN = b"USER alice\r\nPASS secret\r\n"
REMOTE = IPv4Address("TCP", "192.0.2.1", 4000)
LOCAL = IPv4Address("TCP", "127.0.0.1", 4000)
TOO_MANY_HERE = b"-ERR [SYS/TEMP] too many connections from your address\r\n"
SERVER_FULL = b"-ERR [SYS/TEMP] too many connections to this server, try again later\r\n"


def make_factory(**config: Any) -> tuple[POP3Factory, MetricsRecorder]:
    config.setdefault("allow_plaintext_auth", True)
    store = MemoryStore({"alice": [b"Subject: x\n\nbody\n"]})
    factory = POP3Factory(make_portal(store, MemoryChecker(USERS)), ServerConfig(**config),
                          Clock())
    metrics = MetricsRecorder()
    factory.set_observer(session_observer(metrics))
    return factory, metrics


def connect(factory: POP3Factory, peer: Any = REMOTE) -> tuple[Any, BufferedTransport]:
    return connect_transport(factory, peer=peer)


# -- --max-connections ------------------------------------------------------------------


def test_max_connections_at_its_edge() -> None:
    factory, metrics = make_factory(max_connections=3)
    opened = [connect(factory, IPv4Address("TCP", f"192.0.2.{n}", 4000)) for n in range(1, 4)]
    assert all(t.value().startswith(b"+OK") for _, t in opened)
    refused, transport = connect(factory, IPv4Address("TCP", "198.51.100.1", 4000))
    assert transport.value() == SERVER_FULL and transport.disconnecting
    refused.connectionLost(None)  # frees nothing: it was never counted
    assert factory.connection_count.total() == 3
    opened[0][0].connectionLost(None)
    _, again = connect(factory)
    assert again.value().startswith(b"+OK")
    assert metrics.refusals == {("max-connections",): 1}
    assert sum(metrics.sessions.values()) == 1  # a refused connection is no session


def test_trusted_peers_count_towards_max_connections() -> None:
    factory, _ = make_factory(max_connections=1, trusted_networks=TrustedNetworks.parse(LOOPBACK))
    connect(factory, LOCAL)
    assert connect(factory, LOCAL)[1].value() == SERVER_FULL


@pytest.mark.core
def test_shared_count_is_one_limit_for_all_workers() -> None:
    fd = shared_count_segment(3)
    try:
        workers = [SharedConnectionCount(fd, slot, 3) for slot in range(3)]
        assert workers[0].acquire(4) and workers[1].acquire(4) and workers[2].acquire(4)
        assert workers[1].acquire(4)
        assert [w.total() for w in workers] == [4, 4, 4]
        assert not workers[0].acquire(4) and not workers[2].acquire(4)
        workers[1].release()
        assert workers[2].acquire(4)
        # A restarted worker takes over its slot: the dead one's count is gone.
        restarted = SharedConnectionCount(fd, 2, 3)
        assert restarted.total() == 2
    finally:
        os.close(fd)


# -- the per-address limit and --trusted-networks ------------------------------------------


def test_trusted_networks_are_exempt_from_the_per_address_limit() -> None:
    factory, metrics = make_factory(max_connections_per_ip=20,
                                    trusted_networks=TrustedNetworks.parse(LOOPBACK))
    local = [connect(factory, LOCAL) for _ in range(25)]  # a webmail on this host
    assert all(t.value().startswith(b"+OK") for _, t in local)
    assert factory.connections_from == {}
    remote = [connect(factory) for _ in range(21)]
    assert remote[19][1].value().startswith(b"+OK")
    assert remote[20][1].value() == TOO_MANY_HERE
    assert metrics.refusals == {("per-address",): 1}


def test_no_trusted_networks_limits_loopback_too() -> None:
    factory, _ = make_factory(max_connections_per_ip=2, trusted_networks=TrustedNetworks.parse("none"))
    connect(factory, LOCAL)
    connect(factory, LOCAL)
    assert connect(factory, LOCAL)[1].value() == TOO_MANY_HERE


@pytest.mark.core
@pytest.mark.parametrize("text, inside, outside", [
    (LOOPBACK, ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"], ["192.0.2.1", "::2"]),
    ("10.0.0.0/8, 2001:db8::/32", ["10.1.2.3", "2001:db8:1::5"], ["11.0.0.1", "2001:db9::1"]),
    ("192.0.2.7", ["192.0.2.7"], ["192.0.2.8"]),
    ("none", [], ["127.0.0.1"]),
    ("", [], ["127.0.0.1"]),
])
def test_trusted_networks_parse(text: str, inside: list[str], outside: list[str]) -> None:
    trusted = TrustedNetworks.parse(text)
    for host in inside:
        kind = IPv6Address if ":" in host else IPv4Address
        assert trusted.contains(kind("TCP", host, 1)), host
    for host in outside:
        kind = IPv6Address if ":" in host else IPv4Address
        assert not trusted.contains(kind("TCP", host, 1)), host
    assert trusted.contains(UNIXAddress(None)) == trusted.contains(LOCAL)


@pytest.mark.core
def test_trusted_networks_reject_a_bad_entry() -> None:
    with pytest.raises(ValueError, match="'10.0.0.300' is not an address or network"):
        TrustedNetworks.parse("127.0.0.0/8,10.0.0.300")


@pytest.mark.core
def test_trusted_peers_are_never_blocked_but_their_users_failures_count() -> None:
    clock = Clock()
    throttle = Throttle(MemoryThrottleStore(clock), base=1, max_delay=30, max_auth_failures=0,
                        max_ip_failures=3, trusted=TrustedNetworks.parse(LOOPBACK))
    for n in range(5):  # one attacker behind the local webmail, many names
        verdict = result_of(throttle.failed(LOCAL, f"user{n}", 1))
        assert (verdict.failures, verdict.drop) == (1, False)
    assert result_of(throttle.blocked(LOCAL)) is False
    # The user name still counts: three failures for alice delay the next.
    for n in range(1, 4):
        verdict = result_of(throttle.failed(LOCAL, "alice", 1))
        assert verdict.failures == n
    assert verdict.delay == 4.0
    # An untrusted address is blocked at its limit as before.
    for _ in range(3):
        result_of(throttle.failed(REMOTE, "bob", 1))
    assert result_of(throttle.blocked(REMOTE)) is True


# -- a proxy that forwards the client's address ---------------------------------------------


def proxied(wrapping: HAProxyWrappingFactory, client: str, port: int) -> tuple[Any, BufferedTransport]:
    """A connection from a proxy on loopback, with a PROXY v1 header for ``client``."""
    wrapper, transport = connect_transport(wrapping, peer=IPv4Address("TCP", "127.0.0.1", 40000 + port))
    wrapper.dataReceived(b"PROXY TCP4 %s 192.0.2.250 %d 110\r\n" % (client.encode(), port))
    return wrapper, transport


def test_proxy_protocol_clients_are_counted_by_their_own_address() -> None:
    factory, metrics = make_factory(max_connections_per_ip=2)
    wrapping = HAProxyWrappingFactory(factory)
    first = [proxied(wrapping, "198.51.100.7", n) for n in range(2)]
    other = proxied(wrapping, "198.51.100.8", 3)
    for wrapper, _ in [*first, other]:
        wrapper.dataReceived(b"USER alice\r\n")
    assert all(t.value().endswith(b"+OK send your password\r\n") for _, t in [*first, other])
    wrapper, transport = proxied(wrapping, "198.51.100.7", 4)
    assert transport.value().startswith(b"+OK")  # the greeting precedes the header's arrival
    wrapper.dataReceived(b"USER alice\r\n")
    assert transport.value().endswith(TOO_MANY_HERE) and transport.disconnecting
    assert b"send your password" not in transport.value()
    assert factory.connections_from == {"198.51.100.7": 2, "198.51.100.8": 1}
    wrapper.connectionLost(None)
    assert metrics.refusals == {("per-address",): 1}
    assert metrics.sessions == {("-", "no", "limit"): 1}


def test_xclient_from_a_trusted_proxy() -> None:
    factory, metrics = make_factory(max_connections_per_ip=1,
                                    trusted_networks=TrustedNetworks.parse(LOOPBACK),
                                    throttle=Throttle(MemoryThrottleStore(Clock()), base=0))
    first, transport = connect(factory, LOCAL)
    assert transport.value() == b"+OK [XCLIENT] popframe ready\r\n"
    first.dataReceived(b"XCLIENT ADDR=198.51.100.7 PORT=50123 SESSION=abc TTL=4\r\n")
    assert transport.value().endswith(b"\r\n+OK\r\n")
    first.dataReceived(b"USER alice\r\nPASS wrong\r\n")
    assert first.record.peer == "198.51.100.7:50123"
    assert factory.connections_from == {"198.51.100.7": 1}
    # The failure counted for the client, not for the proxy.
    store = factory.config.throttle.store
    assert result_of(store.counts(["fail:ip:198.51.100.7", "fail:ip:127.0.0.1"])) == [1, 0]
    # A second connection forwarding the same client is over its limit.
    second, refused = connect(factory, LOCAL)
    second.dataReceived(b"XCLIENT ADDR=198.51.100.7 PORT=50124\r\nUSER alice\r\n")
    assert refused.value().endswith(b"-ERR [SYS/TEMP] too many connections from your address\r\n")
    assert refused.disconnecting and b"send your password" not in refused.value()
    second.connectionLost(None)
    assert metrics.refusals == {("per-address",): 1}
    assert metrics.sessions == {("-", "no", "limit"): 1}
    # IPv6, and a login after XCLIENT.
    third, transport = connect(factory, LOCAL)
    third.dataReceived(b"XCLIENT ADDR=IPV6:2001:db8::5 PORT=1\r\n" + LOGIN)
    assert b"+OK maildrop has 1 messages" in transport.value()
    assert third.record.peer == "2001:db8::5:1"


def test_xclient_from_anyone_else_is_refused() -> None:
    factory, _ = make_factory(trusted_networks=TrustedNetworks.parse(LOOPBACK))
    protocol, transport = connect(factory, REMOTE)
    assert transport.value() == b"+OK popframe ready\r\n"
    protocol.dataReceived(b"XCLIENT ADDR=127.0.0.1\r\n")
    assert transport.value().endswith(
        b"-ERR XCLIENT is only for proxies on trusted networks\r\n")
    assert protocol.record.peer == "192.0.2.1:4000"


@pytest.mark.parametrize("line, error", [
    (b"XCLIENT", b"-ERR XCLIENT takes NAME=VALUE attributes"),
    (b"XCLIENT ADDR", b"-ERR XCLIENT takes NAME=VALUE attributes"),
    (b"XCLIENT ADDR=999.1.1.1", b"-ERR XCLIENT ADDR is not an IP address"),
    (b"XCLIENT ADDR=192.0.2.1 PORT=70000", b"-ERR XCLIENT PORT is not a port number"),
])
def test_xclient_syntax(line: bytes, error: bytes) -> None:
    factory, _ = make_factory(trusted_networks=TrustedNetworks.parse(LOOPBACK))
    protocol, transport = connect(factory, LOCAL)
    protocol.dataReceived(line + b"\r\n")
    assert transport.value().endswith(error + b"\r\n")


def test_xclient_only_before_login() -> None:
    factory, _ = make_factory(trusted_networks=TrustedNetworks.parse(LOOPBACK))
    protocol, transport = connect(factory, LOCAL)
    protocol.dataReceived(LOGIN + b"XCLIENT ADDR=192.0.2.9\r\n")
    assert transport.value().endswith(b"-ERR command not valid in this state\r\n")
    assert protocol.record.peer == "127.0.0.1:4000"


# -- a real server ---------------------------------------------------------------------------


def greeting(port: int) -> tuple[socket.socket, bytes]:
    connection = socket.create_connection(("127.0.0.1", port), timeout=10)
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = connection.recv(200)
        if not chunk:
            break
        data += chunk
    return connection, data


def scrape(server_log: Any) -> str:
    found = wait_until(lambda: re.search(r"popframe metrics starting on (\d+)", server_log.read_text()),
                       "the metrics port in the log", 20)
    with urllib.request.urlopen(f"http://127.0.0.1:{found.group(1)}/metrics", timeout=10) as page:
        return str(page.read().decode())


@pytest.mark.process
def test_loopback_is_trusted_by_default_on_a_real_server(mail_home: MailHome) -> None:
    """The issue's first contact: a 21st connection from 127.0.0.1 (a
    webmail on the same host, a local proxy) is no longer refused."""
    mail_home.add_user("alice", "alice pw")
    server = start_server(server_args(mail_home), mail_home.root, listeners=2)
    connections = []
    try:
        for _ in range(25):
            connection, line = greeting(server.port)
            connections.append(connection)
            assert line.startswith(b"+OK [XCLIENT] popframe ready")
    finally:
        for connection in connections:
            connection.close()
        server.stop()


@pytest.mark.process
def test_max_connections_is_one_limit_across_workers(mail_home: MailHome) -> None:
    mail_home.add_user("alice", "alice pw")
    args = server_args(mail_home, "--max-connections", "4", "--metrics", "tcp:0:interface=127.0.0.1")
    args[args.index("--workers") + 1] = "2"
    server = start_server(args, mail_home.root, listeners=2)
    held: list[socket.socket] = []
    try:
        for _ in range(4):
            connection, line = greeting(server.port)
            assert line.startswith(b"+OK"), line
            held.append(connection)
        for _ in range(2):  # whichever worker takes them
            connection, line = greeting(server.port)
            assert line == SERVER_FULL
            assert connection.recv(10) == b""  # closed
            connection.close()
        held.pop().close()
        deadline = time.monotonic() + 10
        while True:  # the worker notices the close asynchronously
            connection, line = greeting(server.port)
            if line.startswith(b"+OK") or time.monotonic() > deadline:
                break
            connection.close()
            time.sleep(0.05)
        assert line.startswith(b"+OK")
        held.append(connection)
        page = scrape(server.log)
        refused = re.search(r'popframe_limit_refusals_total\{limit="max-connections"\} (\S+)', page)
        assert refused and float(refused.group(1)) >= 2
        assert 'popframe_sessions_open{listener="tcp:0",tls="no"} 4.0' in page
    finally:
        for connection in held:
            connection.close()
        server.stop()

"""Abuse: what hostile or broken clients do to a server (issue 5, "Abuse").

The first half drives the adapter in memory (BufferedTransport, Clock): the
pre-authentication timeout and the per-address connection limit.  The
second half runs a real ``twistd pop3`` (tests/conftest.py) and attacks it
over sockets: megabyte lines, NUL bytes, invalid UTF-8, thousands of
pipelined commands, a client that never reads, silent and trickling
clients, too many connections from one address, thousands of idle
connections (memory per connection measured), and user names that try to
leave the store root or inject log lines.  Every real-server test ends by
checking the server log holds no traceback.
"""

from __future__ import annotations

import base64
import hashlib
import resource
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import MailHome, ServerProcess, server_args, start_server
from support.clients import LineClient
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.task import Clock

from popframe.server import POP3Factory, ServerConfig
from popframe.testing import (
    BufferedTransport,
    MemoryChecker,
    MemoryStore,
    connect_transport,
    make_portal,
)

pytestmark = pytest.mark.adapter

# -- in memory: the pre-authentication timeout --------------------------------

ALICE = {"alice": "secret"}
LOGIN = b"USER alice\r\nPASS secret\r\n"


#: Not loopback: USER/PASS needs --allow-plaintext-auth, as from anywhere else.
REMOTE = IPv4Address("TCP", "192.0.2.1", 4000)


def make_factory(clock: Clock, **config: Any) -> POP3Factory:
    store = MemoryStore({"alice": [b"Subject: x\n\nbody\n"]})
    config.setdefault("allow_plaintext_auth", True)
    return POP3Factory(make_portal(store, MemoryChecker(ALICE)), ServerConfig(**config), clock)


def open_connection(
    factory: POP3Factory, transport: BufferedTransport | None = None
) -> tuple[Any, BufferedTransport]:
    return connect_transport(factory, transport, REMOTE)


def test_silent_client_is_dropped_at_the_preauth_timeout() -> None:
    clock = Clock()
    _, transport = open_connection(make_factory(clock, preauth_timeout=60, idle_timeout=600))
    clock.advance(59.9)
    assert not transport.disconnecting
    clock.advance(0.1)
    assert transport.disconnecting and not transport.aborted
    assert transport.value().endswith(b"-ERR [SYS/TEMP] login timed out\r\n")
    clock.advance(5)  # a client that does not read its -ERR is cut off
    assert transport.aborted


def test_trickling_client_is_dropped_at_the_preauth_timeout() -> None:
    """Slowloris: input keeps the idle timer alive, not the login deadline."""
    clock = Clock()
    protocol, transport = open_connection(make_factory(clock, preauth_timeout=60))
    for _ in range(59):
        protocol.dataReceived(b"N")
        clock.advance(1)
    assert not transport.disconnecting
    protocol.dataReceived(b"OOP\r\nCAPA\r\n")  # even whole commands
    clock.advance(1)
    assert transport.disconnecting


def test_preauth_timeout_ends_at_login() -> None:
    clock = Clock()
    protocol, transport = open_connection(make_factory(clock, preauth_timeout=60, idle_timeout=600))
    protocol.dataReceived(LOGIN)
    assert b"+OK maildrop has 1 messages" in transport.value()
    clock.advance(599)
    assert not transport.disconnecting
    protocol.dataReceived(b"NOOP\r\n")
    clock.advance(599)
    assert not transport.disconnecting
    clock.advance(1)  # the post-login idle timeout (RFC 1939: >= 10 minutes)
    assert transport.value().endswith(b"-ERR disconnected for inactivity\r\n")


def test_preauth_timeout_survives_failed_logins_and_stls_restart() -> None:
    clock = Clock()
    protocol, transport = open_connection(make_factory(clock, preauth_timeout=30))
    protocol.dataReceived(b"USER alice\r\nPASS wrong\r\n")
    assert transport.value().endswith(b"-ERR [AUTH] authentication failed\r\n")
    clock.advance(30)
    assert transport.disconnecting


def test_no_preauth_timeout_in_a_bare_config() -> None:
    clock = Clock()
    _, transport = open_connection(make_factory(clock, idle_timeout=600))
    clock.advance(599)
    assert not transport.disconnecting
    assert not clock.getDelayedCalls() or all(c.getTime() >= 600 for c in clock.getDelayedCalls())


def test_no_timers_left_after_disconnect() -> None:
    clock = Clock()
    protocol, transport = open_connection(make_factory(clock, preauth_timeout=60))
    protocol.connectionLost(None)
    assert clock.getDelayedCalls() == []


# -- in memory: connections per address -----------------------------------------


def test_connections_per_address_are_limited() -> None:
    clock = Clock()
    factory = make_factory(clock, max_connections_per_ip=2)
    first, _ = open_connection(factory)
    second, _ = open_connection(factory)
    third, refused = open_connection(factory)
    assert refused.value() == b"-ERR [SYS/TEMP] too many connections from your address\r\n"
    assert refused.disconnecting
    third.dataReceived(b"USER alice\r\n")  # nothing more is parsed or sent
    third.connectionLost(None)
    assert refused.value() == b"-ERR [SYS/TEMP] too many connections from your address\r\n"
    # Others are not affected...
    _, other = open_connection(factory, BufferedTransport(peer=IPv4Address("TCP", "192.0.2.2", 4000)))
    assert other.value().startswith(b"+OK")
    # ... and a closed connection frees its place.
    first.connectionLost(None)
    _, again = open_connection(factory)
    assert again.value().startswith(b"+OK")
    assert factory.connections_from == {"192.0.2.1": 2, "192.0.2.2": 1}
    assert clock.getDelayedCalls() != []  # the admitted ones have timers


def test_refused_connection_frees_no_place_and_leaks_nothing() -> None:
    factory = make_factory(Clock(), max_connections_per_ip=1)
    kept, _ = open_connection(factory)
    for _ in range(5):
        refused, transport = open_connection(factory)
        assert transport.disconnecting
        refused.connectionLost(None)
    assert factory.connections_from == {"192.0.2.1": 1}
    kept.connectionLost(None)
    assert factory.connections_from == {}


def test_ipv6_addresses_count_per_64() -> None:
    factory = make_factory(Clock(), max_connections_per_ip=1)
    open_connection(factory, BufferedTransport(peer=IPv6Address("TCP", "2001:db8:1:2::1", 4000)))
    _, same_64 = open_connection(factory, BufferedTransport(peer=IPv6Address("TCP", "2001:db8:1:2::ffff", 4000)))
    assert same_64.value().startswith(b"-ERR [SYS/TEMP] too many connections")
    _, other_64 = open_connection(factory, BufferedTransport(peer=IPv6Address("TCP", "2001:db8:1:3::1", 4000)))
    assert other_64.value().startswith(b"+OK")


def test_no_limit_by_default_and_for_unix_sockets() -> None:
    factory = make_factory(Clock())
    for _ in range(50):
        assert open_connection(factory)[1].value().startswith(b"+OK")
    unix = make_factory(Clock(), max_connections_per_ip=1)
    for _ in range(3):
        assert open_connection(unix, BufferedTransport(peer=UNIXAddress(None)))[1].value().startswith(b"+OK")


def test_limit_not_applied_to_the_proxy_behind_haproxy() -> None:
    """Behind haproxy: every client is the proxy's address at connectionMade;
    the client's own address is counted once its PROXY header arrives
    (tests/test_limits.py)."""
    from twisted.protocols.haproxy._wrapper import HAProxyWrappingFactory

    wrapping = HAProxyWrappingFactory(make_factory(Clock(), max_connections_per_ip=1))
    for n in range(3):
        _, transport = connect_transport(wrapping, peer=IPv4Address("TCP", "127.0.0.1", 4000 + n))
        assert transport.value().startswith(b"+OK")


@pytest.mark.core
def test_options_flow_into_server_config(tmp_path: Path) -> None:
    from popframe.assembly import make_factory as factory_from_settings
    from popframe.settings import Settings
    from popframe.tap import Options

    (tmp_path / "users").touch()
    base = ["--listen", "tcp:0", "--store", f"maildir:{tmp_path}/%u", "--auth",
            f"passwd-file:{tmp_path / 'users'}", "--workers", "1"]
    options = Options()
    options.parseOptions(base)
    config = factory_from_settings(Settings.from_options(options), Clock()).config
    assert config.preauth_timeout == 60 and config.max_connections_per_ip == 20
    options = Options()
    options.parseOptions([*base, "--preauth-timeout", "0", "--max-connections-per-ip", "0"])
    config = factory_from_settings(Settings.from_options(options), Clock()).config
    assert config.preauth_timeout is None and config.max_connections_per_ip == 0
    from twisted.python.usage import UsageError

    for bad in (["--preauth-timeout", "-1"], ["--max-connections-per-ip", "-1"]):
        with pytest.raises(UsageError):
            Options().parseOptions([*base, *bad])


# -- a real server ----------------------------------------------------------------

TIMEOUT = 20.0


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def assert_clean_log(server: ServerProcess) -> None:
    time.sleep(0.2)  # let the log drain
    text = server.log.read_text(errors="replace")
    assert "Traceback" not in text, text[-5000:]
    assert "Unhandled" not in text, text[-5000:]


@pytest.fixture
def abuse_home(mail_home: MailHome) -> MailHome:
    mail_home.add_user("alice", "alice password")
    mail_home.deliver("alice", b"Subject: small\r\n\r\nhello\r\n")
    return mail_home


def run_server(home: MailHome, *extra: str) -> ServerProcess:
    return start_server(server_args(home, "--throttle-base", "0", *extra), home.root, listeners=2)


@pytest.fixture
def server(abuse_home: MailHome) -> Iterator[ServerProcess]:
    server = run_server(abuse_home)
    yield server
    server.stop()
    assert_clean_log(server)


def login(client: LineClient) -> None:
    assert client.line().startswith(b"+OK")
    assert client.command(b"USER alice").startswith(b"+OK")
    assert client.command(b"PASS alice password").startswith(b"+OK maildrop has")


@pytest.mark.process
def test_megabyte_lines_are_refused_and_memory_stays_flat(server: ServerProcess) -> None:
    pid = server.process.pid
    megabyte = b"X" * (1 << 20)

    def round_of_lines() -> None:
        for prefix in (b"", b"USER ", b"AUTH PLAIN ", b"PASS "):
            client = LineClient.connect(server.port, TIMEOUT)
            assert client.line().startswith(b"+OK")
            for _ in range(3):
                client.send(prefix + megabyte + b"\r\n")
                assert client.line() == b"-ERR command line too long", prefix
            assert client.command(b"CAPA") == b"+OK capability list follows"
            client.multiline()
            client.close()

    round_of_lines()  # warm up allocators
    before = rss_kib(pid)
    for _ in range(5):
        round_of_lines()
    after = rss_kib(pid)
    assert after - before < 8 * 1024, (before, after)
    # A megabyte line inside a session too.
    client = LineClient.connect(server.port, TIMEOUT)
    login(client)
    client.send(megabyte + b"\r\nSTAT\r\n")
    assert client.line() == b"-ERR command line too long"
    assert client.line() == b"+OK 1 25"
    # And a line that never ends: buffered input is bounded, not the line.
    client.send(megabyte * 4)
    time.sleep(0.5)
    assert rss_kib(pid) - before < 8 * 1024
    client.send(b"\r\nSTAT\r\n")
    assert client.line() == b"-ERR command line too long"
    assert client.line() == b"+OK 1 25"
    client.close()


@pytest.mark.process
def test_nul_bytes_and_invalid_utf8_get_err(server: ServerProcess) -> None:
    b64 = lambda data: base64.b64encode(data)  # noqa: E731
    cases = [
        b"\0", b"\0\0\0\0", b"US\0ER alice", b"USER al\0ice", b"PASS \0", b"CAPA\0",
        b"USER \xff\xfe", b"USER \xc3", b"USER \xed\xa0\x80", b"APOP \xff " + b"0" * 32,
        b"\xff\xff\xff\xff", b"\x80CAPA", b"AUTH \xff", b"AUTH PLAIN " + b64(b"\0\xff\0pw"),
        b"AUTH PLAIN " + b64(b"\xff\0alice\0pw"), b"AUTH PLAIN " + b64(b"\0alice\0\xff\0"),
        b"AUTH PLAIN \0", b"AUTH LOGIN " + b64(b"\xff"), b"LIST \xd9\xa3",  # Arabic-Indic 3
        b"RETR \xef\xbc\x91",  # fullwidth 1
    ]
    client = LineClient.connect(server.port, TIMEOUT)
    assert client.line().startswith(b"+OK")
    sent = 0
    for case in cases:
        if sent == 8:  # stay under the bad-command limit
            client.close()
            client = LineClient.connect(server.port, TIMEOUT)
            assert client.line().startswith(b"+OK")
            sent = 0
        reply = client.command(case)
        if reply.startswith(b"+ "):  # AUTH LOGIN asked for the password
            reply = client.command(b64(b"\xfe"))
        assert reply.startswith(b"-ERR"), (case, reply)
        sent += 1
    # UTF8 mode: invalid UTF-8 and unnormalizable names are refused too.
    client = LineClient.connect(server.port, TIMEOUT)
    assert client.line().startswith(b"+OK")
    assert client.command(b"UTF8").startswith(b"+OK")
    for case in (b"USER \xc3\x28", b"USER \xe2\x80\xae", b"USER a\xcc\x88\xe2\x80\x8b"):
        reply = client.command(case)
        if reply.startswith(b"+OK"):
            reply = client.command(b"PASS \xff\xfe\x00x")
        assert reply.startswith(b"-ERR"), (case, reply)
    assert client.command(b"CAPA").startswith(b"+OK")
    client.close()


@pytest.mark.process
def test_thousands_of_pipelined_commands_answered_in_order(server: ServerProcess) -> None:
    client = LineClient.connect(server.port, TIMEOUT)
    login(client)
    commands, expected = [], []
    for n in range(5000):
        kind = n % 4
        if kind == 0:
            commands.append(b"NOOP"), expected.append([b"+OK"])
        elif kind == 1:
            commands.append(b"STAT"), expected.append([b"+OK 1 25"])
        elif kind == 2:
            commands.append(b"LIST 1"), expected.append([b"+OK 1 25"])
        else:
            commands.append(b"RETR 1"), expected.append(
                [b"+OK 25 octets", b"Subject: small", b"", b"hello", b"."])
    payload = b"".join(c + b"\r\n" for c in commands) + b"QUIT\r\n"
    sender = threading.Thread(target=client.send, args=(payload,))
    sender.start()  # the server stops reading while we are not reading: send meanwhile
    for want in expected:
        got = [client.line() for _ in want]
        assert got == want
    assert client.line().startswith(b"+OK popframe signing off")
    sender.join(TIMEOUT)
    client.close()


@pytest.mark.process
def test_client_that_never_reads_does_not_grow_the_server(abuse_home: MailHome) -> None:
    abuse_home.deliver("alice", b"Subject: big\r\n\r\n" + (b"y" * 998 + b"\r\n") * 8000)  # 8 MB
    server = run_server(abuse_home)
    try:
        pid = server.process.pid
        client = LineClient.connect(server.port, TIMEOUT)
        login(client)
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        before = rss_kib(pid)
        client.sock.setblocking(False)
        request = b"RETR 2\r\n" * 50
        sent, deadline = 0, time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                sent += client.sock.send(request)
            except BlockingIOError:
                time.sleep(0.05)
        samples = []
        for _ in range(10):
            time.sleep(0.2)
            samples.append(rss_kib(pid))
        # 400 MB of RETRs requested; the server holds its socket buffer,
        # a chunk, and the bounded pipelined input (64 KiB) at most.
        assert sent > 64 * 1024
        assert max(samples) - before < 16 * 1024, (before, samples)
        assert samples[-1] - samples[0] < 2 * 1024, samples
        # Another client is served meanwhile.
        other = LineClient.connect(server.port, TIMEOUT)
        assert other.line().startswith(b"+OK")
        assert other.command(b"CAPA").startswith(b"+OK")
        other.close()
        client.close()
    finally:
        server.stop()
    assert_clean_log(server)


@pytest.mark.process
def test_silent_and_trickling_clients_are_dropped_after_the_preauth_timeout(
        abuse_home: MailHome) -> None:
    server = run_server(abuse_home, "--preauth-timeout", "1")
    try:
        silent = LineClient.connect(server.port, 10)
        start = time.monotonic()
        assert silent.line().startswith(b"+OK")
        assert silent.until_eof() == b"-ERR [SYS/TEMP] login timed out\r\n"
        assert 0.8 < time.monotonic() - start < 5

        trickle = LineClient.connect(server.port, 10)
        start = time.monotonic()
        assert trickle.line().startswith(b"+OK")
        with pytest.raises(OSError):
            for _ in range(40):  # one byte every 0.1 s resets an idle timer, not this
                trickle.send(b"N")
                time.sleep(0.1)
            trickle.until_eof()
        assert time.monotonic() - start < 4

        # A client that logged in is not cut by it.
        client = LineClient.connect(server.port, 10)
        login(client)
        time.sleep(1.5)
        assert client.command(b"NOOP") == b"+OK"
        client.close()
    finally:
        server.stop()
    assert_clean_log(server)


@pytest.mark.process
def test_connections_per_address_limit_on_a_real_server(abuse_home: MailHome) -> None:
    # Loopback is trusted (exempt) by default: trust nobody here.
    server = run_server(abuse_home, "--max-connections-per-ip", "3", "--trusted-networks", "none")
    try:
        clients = [LineClient.connect(server.port, TIMEOUT) for _ in range(3)]
        for client in clients:
            assert client.line().startswith(b"+OK")
        refused = LineClient.connect(server.port, TIMEOUT)
        assert refused.until_eof() == b"-ERR [SYS/TEMP] too many connections from your address\r\n"
        clients.pop().close()
        deadline = time.monotonic() + 5
        while True:  # the server notices the close asynchronously
            again = LineClient.connect(server.port, TIMEOUT)
            first = again.line()
            if first.startswith(b"+OK") or time.monotonic() > deadline:
                break
            again.close()
            time.sleep(0.05)
        assert first.startswith(b"+OK")
        assert again.command(b"USER alice").startswith(b"+OK")
        assert again.command(b"PASS alice password").startswith(b"+OK maildrop has")
        # The limit holds on the implicit-TLS listener too (same factory).
        import ssl

        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        with (
            socket.create_connection(("127.0.0.1", server.tls_port), timeout=TIMEOUT) as raw,
            context.wrap_socket(raw) as tls,
        ):
            assert tls.recv(200).startswith(b"-ERR [SYS/TEMP] too many connections")
        for client in [*clients, again]:
            client.close()
    finally:
        server.stop()
    assert_clean_log(server)


# -- many idle connections ---------------------------------------------------------

SUITE_IDLE_CONNECTIONS = 2000


def raise_nofile(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {wanted}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def open_idle_connections(port: int, count: int, timeout: float = 120) -> list[socket.socket]:
    """``count`` connections, each having read its greeting (so the server
    has a session for each), opened non-blocking from this process."""
    import selectors

    sockets: list[socket.socket] = []
    selector = selectors.DefaultSelector()
    waiting = 0
    deadline = time.monotonic() + timeout
    batch = 200
    while len(sockets) < count:
        for _ in range(min(batch, count - len(sockets))):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            sockets.append(s)
            selector.register(s, selectors.EVENT_READ)
            waiting += 1
        while waiting > 0 and (waiting > batch // 2 or len(sockets) == count):
            if time.monotonic() > deadline:
                raise AssertionError(f"{waiting} of {len(sockets)} greetings missing")
            for key, _ in selector.select(1):
                data = key.fileobj.recv(200)  # type: ignore[union-attr]
                assert data.startswith(b"+OK"), data
                selector.unregister(key.fileobj)
                waiting -= 1
    selector.close()
    return sockets


def measure_idle_connections(home: MailHome, count: int) -> dict[str, float]:
    """Start a server, open ``count`` idle connections; return RSS numbers."""
    raise_nofile(count + 1000)  # the server inherits this process's limits
    server = start_server(
        server_args(home, "--max-connections-per-ip", "0"),  # default --preauth-timeout (60 s)
        home.root, listeners=2)
    sockets: list[socket.socket] = []
    try:
        warm = open_idle_connections(server.port, 100)
        for s in warm:
            s.close()
        time.sleep(0.5)
        before = rss_kib(server.process.pid)
        start = time.monotonic()
        sockets = open_idle_connections(server.port, count)
        elapsed = time.monotonic() - start
        time.sleep(0.5)
        after = rss_kib(server.process.pid)
        return {
            "connections": count,
            "rss_before_mib": before / 1024,
            "rss_after_mib": after / 1024,
            "bytes_per_connection": (after - before) * 1024 / count,
            "open_seconds": elapsed,
        }
    finally:
        for s in sockets:
            s.close()
        server.stop()
        assert_clean_log(server)


@pytest.mark.process
def test_memory_per_idle_connection(mail_home: MailHome) -> None:
    result = measure_idle_connections(mail_home, SUITE_IDLE_CONNECTIONS)
    print(f"\nidle connections: {result}")
    # Issue 4's target: 10,000 idle connections in < 300 MB RSS, i.e. about
    # 30 KB each with the process's own baseline; benchmarks/idle_connections.py
    # measures the full 10,000.
    assert result["bytes_per_connection"] < 24 * 1024, result
    assert result["rss_before_mib"] + 10_000 * result["bytes_per_connection"] / (1 << 20) < 300


# -- user names that try to escape ------------------------------------------------

HOSTILE_NAMES = ["../x", "../../escaped", "a/b", "%2e%2e", "..", ".", ".hidden", "x/../../y",
                 "..\\x", "/abs", "%u", "a\rlogin ok mechanism=USER user='alice'"]


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.process
def test_hostile_user_names_stay_inside_the_store_and_out_of_the_logs(mail_home: MailHome) -> None:
    mail_home.add_user("alice", "alice password")
    with open(mail_home.passwd_file, "ab") as f:  # as an administrator's typo would
        for name in HOSTILE_NAMES:
            if "\r" not in name:
                f.write(name.encode() + b":{PLAIN}pw::::::\n")
        f.write(b"nul\0name:{PLAIN}pw::::::\n")
    passwd_digest = hashlib.sha256(mail_home.passwd_file.read_bytes()).hexdigest()
    (mail_home.root / "mail").mkdir(exist_ok=True)
    outside_before = tree(mail_home.root.parent)
    inside_before = tree(mail_home.root)
    server = run_server(mail_home, "--max-ip-failures", "0")
    attempts = 0
    try:
        def fresh() -> LineClient:
            client = LineClient.connect(server.port, TIMEOUT)
            assert client.line().startswith(b"+OK")
            return client

        names = [n.encode() for n in HOSTILE_NAMES] + [b"nul\0name", b"a\nb", b"x\x85y"]
        # Names that are odd but name a directory inside the root may log in.
        safe = {b"%2e%2e", b"%u"}
        logins = 0
        for name in names:
            for password in (b"pw", b"wrong"):
                may_log_in = name in safe and password == b"pw"
                # USER/PASS (a NUL or LF cannot pass through a command line)
                client = fresh()
                reply = client.command(b"USER " + name)
                if reply.startswith(b"+OK"):
                    reply = client.command(b"PASS " + password)
                assert reply.startswith(b"+OK maildrop" if may_log_in else b"-ERR"), (name, reply)
                client.close()
                # AUTH PLAIN carries any byte but NUL in the authcid
                for message in (b"\0" + name + b"\0" + password,
                                name + b"\0alice\0alice password"):
                    client = fresh()
                    reply = client.command(b"AUTH PLAIN " + base64.b64encode(message))
                    expected = b"+OK maildrop" if may_log_in and message[:1] == b"\0" else b"-ERR"
                    assert reply.startswith(expected), (name, message, reply)
                    if reply.startswith(b"+OK"):
                        client.command(b"QUIT")
                    client.close()
                logins += 2 if may_log_in else 0
                attempts += 1
        # UTF8 mode and AUTH LOGIN too.
        client = fresh()
        client.command(b"UTF8")
        reply = client.command(b"USER ../x")
        if reply.startswith(b"+OK"):
            reply = client.command(b"PASS pw")
        assert reply.startswith(b"-ERR")
        client.close()
        client = fresh()
        assert client.command(b"AUTH LOGIN").startswith(b"+ ")
        assert client.command(base64.b64encode(b"../x\nlogin ok user='alice'")).startswith(b"+ ")
        assert client.command(base64.b64encode(b"pw")).startswith(b"-ERR")
        client.close()
        # The legitimate user still logs in.
        client = fresh()
        assert client.command(b"USER alice").startswith(b"+OK")
        assert client.command(b"PASS alice password").startswith(b"+OK maildrop has")
        client.command(b"QUIT")
        client.close()
    finally:
        server.stop()
    assert_clean_log(server)
    assert attempts == 2 * len(names)
    # Nothing created or changed outside root/mail; nothing at all outside root.
    assert tree(mail_home.root.parent) - outside_before <= {
        str(Path(mail_home.root.name) / p) for p in tree(mail_home.root)}
    created = tree(mail_home.root) - inside_before - {"twistd.log"}
    assert all(p.startswith("mail/") for p in created), created
    for name in created:
        assert (mail_home.root / name).resolve().is_relative_to((mail_home.root / "mail").resolve())
    assert not (mail_home.root / "x").exists() and not (mail_home.root.parent / "escaped").exists()
    # The passwd-file is read, never written.
    assert hashlib.sha256(mail_home.passwd_file.read_bytes()).hexdigest() == passwd_digest
    # One log line per event: no line was injected.
    lines = server.log.read_text(errors="replace").splitlines()
    events = [line.split("] ", 1)[1] for line in lines if "] " in line]
    ok_lines = [event for event in events if event.startswith("login ok ")]
    assert len(ok_lines) == logins + 1, ok_lines
    assert sum("user='alice'" in line for line in ok_lines) == 1, ok_lines
    for line in lines:
        assert "\0" not in line and "\x85" not in line and "\r" not in line
    # Every line is a log event of its own (twistd starts each with a time).
    import re

    injected = [line for line in lines if not re.match(r"\d{4}-\d\d-\d\dT", line)]
    assert injected == [], injected

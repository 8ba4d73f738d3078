"""The example cluster (examples/cluster/run.py) for real: HAProxy (PROXY
v2, health checks) in front of two ``twistd pop3 --workers 2`` nodes on
one PostgreSQL database and one Redis.

Clients go through HAProxy, or straight to one node with a PROXY v1
header written here (to pick the node).  Faults: a node SIGKILLed
mid-session, a node's database cut (a TCP relay between it and
PostgreSQL), both cut, and Redis stopped (a throwaway redis-server)."""

from __future__ import annotations

import io
import os
import poplib
import re
import signal
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_support import RedisProcess, TCPRelay, haproxy, load_example, unavailable
from redis_support import REDIS_URL
from sql_support import ADMIN_URLS, admin_connection
from test_sasl_scram import LineClient, scramp_final, socket_login
from test_sasl_scram import client as scram_client

from popframe.auth.schemes import make_hash
from popframe.cli.user import add_user
from popframe.db import Database, parse_url
from popframe.stores.sql import SQLStore
from popframe.testing import wait_for

pytestmark = pytest.mark.external

#: Fast throttle for the tests: four failures from one address block it.
THROTTLE = """
throttle-base = 0.05
throttle-max = 0.2
max-ip-failures = 4
"""


def password(user: str) -> str:
    return f"{user}'s password"


def redis_or_skip(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except (redis.RedisError, OSError) as error:
        unavailable(f"no Redis at {url}: {error}")
    finally:
        client.close()


def start_cluster(directory: Path, **kwargs: Any) -> Any:
    haproxy()
    admin_connection("postgresql").close()  # skips (fails in CI) without PostgreSQL
    kwargs.setdefault("redis", REDIS_URL)  # the servers the other tests use
    kwargs.setdefault("postgresql", ADMIN_URLS["postgresql"])
    redis_or_skip(kwargs["redis"])
    cluster = load_example().Cluster(directory, extra_config=THROTTLE, **kwargs)
    cluster.start()
    return cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    started = start_cluster(tmp_path_factory.mktemp("cluster"))
    yield started
    started.stop()


# -- helpers -------------------------------------------------------------------------


def new_user(cluster: Any, messages: int = 0, login_delay: int | None = None) -> str:
    user = "u" + uuid.uuid4().hex[:10]
    database = Database(parse_url(cluster.dsn))
    try:
        database.call(add_user, user, make_hash("SCRAM-SHA-256", password(user).encode()),
                      None, login_delay)
        store = SQLStore(database)
        for i in range(messages):
            wait_for(store.deliver(user, io.BytesIO(b"Subject: %d\r\n\r\nbody %d\r\n" % (i, i))))
    finally:
        database.close()
    return user


def stored(cluster: Any, user: str) -> int:
    database = Database(parse_url(cluster.dsn))
    try:
        row = database.call(lambda s: s.one(
            "SELECT COUNT(*) FROM popframe_messages WHERE maildrop = ?", (user,)))
        assert row is not None
        return int(row[0])
    finally:
        database.close()


class NodeClient(poplib.POP3):
    """poplib straight to one node, with the PROXY v1 header HAProxy
    would send (naming ``source``)."""

    def __init__(self, port: int, source: str = "127.0.0.1", source_port: int = 50000) -> None:
        self._header = f"PROXY TCP4 {source} 127.0.0.1 {source_port} 110\r\n".encode()
        super().__init__("127.0.0.1", port, timeout=15)

    def _create_socket(self, timeout: float) -> socket.socket:
        sock = super()._create_socket(timeout)
        sock.sendall(self._header)
        return sock


def node_login(cluster: Any, index: int, user: str, **kwargs: Any) -> poplib.POP3:
    client = NodeClient(cluster.nodes[index - 1].pop3_port, **kwargs)
    client.user(user)
    client.pass_(password(user))
    return client


def haproxy_login(cluster: Any, user: str, secret: str | None = None) -> poplib.POP3:
    """Through HAProxy's pop3 frontend, with STLS."""
    client = poplib.POP3("127.0.0.1", cluster.pop3_port, timeout=15)
    client.stls(context=insecure_context())
    client.user(user)
    client.pass_(secret if secret is not None else password(user))
    return client


def insecure_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return context


def wait_until(check: Any, seconds: float, what: str) -> float:
    """Seconds until ``check()`` held (bounded)."""
    started = time.monotonic()
    load_example().wait_until(check, seconds, what)
    return time.monotonic() - started


# -- through HAProxy ----------------------------------------------------------------------


def test_clients_through_haproxy(cluster: Any) -> None:
    user = new_user(cluster, messages=2)
    client = haproxy_login(cluster, user)  # STLS, the node's certificate
    assert client.stat()[0] == 2
    assert b"body 0" in b"\n".join(client.retr(1)[1])
    client.quit()
    implicit = poplib.POP3_SSL("127.0.0.1", cluster.pop3s_port, context=insecure_context(),
                               timeout=15)
    implicit.user(user)
    implicit.pass_(password(user))
    assert implicit.stat()[0] == 2
    implicit.quit()


@pytest.mark.parametrize("frontend", ["stls", "implicit"])
def test_scram_plus_channel_binding_through_haproxy(cluster: Any, frontend: str) -> None:
    """TCP mode: the TLS is the node's, so tls-server-end-point binds to
    the node's certificate and the -PLUS login succeeds."""
    user = new_user(cluster, messages=1)
    context = insecure_context()
    if frontend == "implicit":
        raw = socket.create_connection(("127.0.0.1", cluster.pop3s_port), timeout=15)
        sock = context.wrap_socket(raw)
        conn = LineClient(sock)
        assert conn.line().startswith(b"+OK")
    else:
        raw = socket.create_connection(("127.0.0.1", cluster.pop3_port), timeout=15)
        plain = LineClient(raw)
        assert plain.line().startswith(b"+OK")
        assert plain.command(b"STLS").startswith(b"+OK")
        sock = context.wrap_socket(raw)
        conn = LineClient(sock)
    with sock:
        c = scram_client(password(user), user, mechanisms=["SCRAM-SHA-256-PLUS"],
                         channel_binding=("tls-server-end-point", sock))
        first = c.get_client_first().encode()
        reply = socket_login(conn, b"SCRAM-SHA-256-PLUS", first, scramp_final(c))
        assert reply.startswith(b"+OK maildrop"), reply
        c.set_server_final(conn.signature)  # type: ignore[attr-defined]
        assert conn.command(b"QUIT").startswith(b"+OK")


# -- across nodes --------------------------------------------------------------------------


def test_same_maildrop_through_either_node_and_in_use_across_nodes(cluster: Any) -> None:
    user = new_user(cluster, messages=3)
    first = node_login(cluster, 1, user)
    assert first.stat()[0] == 3
    first.dele(1)
    with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
        node_login(cluster, 2, user)
    with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
        haproxy_login(cluster, user)  # whichever node HAProxy picks
    first.quit()
    second = node_login(cluster, 2, user)  # at once: QUIT released the lock everywhere
    assert second.stat()[0] == 2
    second.quit()


def test_throttle_counts_across_nodes(cluster: Any) -> None:
    """Two failures through each node from one address reach
    max-ip-failures 4 in Redis: that address is refused on both nodes,
    another is not."""
    user = new_user(cluster)
    for index in (1, 2, 1, 2):
        client = NodeClient(cluster.nodes[index - 1].pop3_port, source="127.0.0.30")
        client.user(f"nobody-{uuid.uuid4().hex[:6]}")
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
            client.pass_("wrong")
        client.close()
    for index in (1, 2):
        with pytest.raises(poplib.error_proto, match="too many failures"):
            node_login(cluster, index, user, source="127.0.0.30")
    node_login(cluster, 1, user, source="127.0.0.31").quit()
    import redis

    client = redis.Redis.from_url(cluster.redis)
    assert int(client.get(f"{cluster.prefix}fail:ip:127.0.0.30") or 0) == 4
    client.close()


def test_login_delay_across_nodes(cluster: Any) -> None:
    user = new_user(cluster, login_delay=60)
    node_login(cluster, 1, user).quit()
    with pytest.raises(poplib.error_proto, match=r"\[LOGIN-DELAY\]"):
        node_login(cluster, 2, user)


def test_real_client_address_in_the_node_log(cluster: Any) -> None:
    user = new_user(cluster)
    sock = socket.socket()
    sock.settimeout(15)
    sock.bind(("127.0.0.40", 0))
    sock.connect(("127.0.0.1", cluster.pop3_port))
    source_port = sock.getsockname()[1]
    with sock:
        conn = LineClient(sock)
        assert conn.line().startswith(b"+OK")
        # The loopback rule, for the client HAProxy named (it is 127.0.0.40).
        assert conn.command(f"USER {user}".encode()).startswith(b"+OK")
        assert conn.command(f"PASS {password(user)}".encode()).startswith(b"+OK")
        assert conn.command(b"QUIT").startswith(b"+OK")
    pattern = rf"login ok mechanism=USER user='{user}' peer=127\.0\.0\.40:{source_port} "
    wait_until(lambda: any(re.search(pattern, n.log.read_text()) for n in cluster.nodes), 10,
               "the login line")


# -- a node killed -----------------------------------------------------------------------


def test_node_sigkilled_mid_session(cluster: Any) -> None:
    held = new_user(cluster, messages=5)
    quitting = new_user(cluster, messages=150)
    victim = node_login(cluster, 1, held)
    assert victim.stat()[0] == 5
    victim.dele(1)
    victim.dele(2)
    victim.retr(3)
    committing = node_login(cluster, 1, quitting)
    for n in range(1, 101):
        committing._putcmd(f"DELE {n}")
    for _ in range(100):
        assert committing._getresp().startswith(b"+OK")
    committing._putcmd("QUIT")  # the kill races the commit
    node = cluster.nodes[0]
    os.killpg(node.pid, signal.SIGKILL)  # the node: its parent and its workers
    killed = time.monotonic()
    node.process.wait(10)
    try:
        client: list[poplib.POP3] = []

        def free() -> bool:
            try:
                client.append(node_login(cluster, 2, held))
                return True
            except poplib.error_proto as error:
                assert b"[IN-USE]" in error.args[0]
                return False

        wait_until(free, 10, "the maildrop lock freed")
        handover = time.monotonic() - killed
        print(f"lock handover after SIGKILL: {handover * 1000:.0f} ms")
        assert client[0].stat()[0] == 5  # nothing lost: the marks died with the session
        client[0].quit()
        assert stored(cluster, held) == 5
        assert stored(cluster, quitting) in (150, 50)  # all or none
        # HAProxy: sessions keep working at once (a refused connection is
        # redispatched), and it marks the dead node down.
        for _ in range(4):
            haproxy_login(cluster, new_user(cluster)).quit()
        wait_until(lambda: cluster.servers_down() == {"node1"}, 15, "node1 marked down")
        print(f"HAProxy marked node1 down by {time.monotonic() - killed:.1f} s after SIGKILL")
        haproxy_login(cluster, quitting).quit()
    finally:
        cluster.start_node(1)
        cluster.wait_serving(node)
        wait_until(lambda: cluster.servers_up() == {"node1", "node2"}, 30, "node1 back")


# -- outages ----------------------------------------------------------------------------


@pytest.fixture
def fault_cluster(tmp_path: Path) -> Iterator[tuple[Any, list[TCPRelay], RedisProcess]]:
    """A cluster whose nodes reach PostgreSQL through relays the test can
    cut, on a throwaway Redis."""
    relays = [TCPRelay(5432), TCPRelay(5432)]
    redis_server = RedisProcess(tmp_path)

    def through_relay(index: int, dsn: str) -> str:
        return dsn.replace("127.0.0.1:5432", f"127.0.0.1:{relays[index - 1].port}")

    try:
        started = start_cluster(tmp_path / "cluster", node_dsn=through_relay,
                                redis=redis_server.url)
        try:
            yield started, relays, redis_server
        finally:
            started.stop()
    finally:
        redis_server.stop()
        for relay in relays:
            relay.close()


def test_database_outage(fault_cluster: tuple[Any, list[TCPRelay], RedisProcess]) -> None:
    cluster, relays, _ = fault_cluster
    user, loader = new_user(cluster, messages=1), new_user(cluster, messages=1)
    outcomes: dict[str, int] = {}
    stop = threading.Event()

    def load() -> None:  # sessions through HAProxy all along (bounded by stop)
        while not stop.is_set():
            try:
                haproxy_login(cluster, loader).quit()
                kind = "ok"
            except poplib.error_proto as error:
                text = error.args[0]
                text = text.decode() if isinstance(text, bytes) else str(text)
                code = re.match(r"-ERR (\[[A-Z/-]+\])", text)
                # poplib's STLS says "CAPA not supported" when the connection
                # closed before CAPA's reply (no node up: HAProxy closes).
                kind = code.group(1) if code else (
                    "closed" if "CAPA not supported" in text else text)
            except (OSError, EOFError):
                kind = "closed"
            outcomes[kind] = outcomes.get(kind, 0) + 1

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    try:
        # One node's database cut: its health check fails, HAProxy routes around it.
        relays[1].cut()
        cut = time.monotonic()
        wait_until(lambda: cluster.servers_down() == {"node2"}, 15, "node2 out")
        print(f"node2 out of HAProxy {time.monotonic() - cut:.1f} s after its database "
              "was cut")
        assert cluster.nodes[1].health() == 503
        refused = time.monotonic()
        with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
            node_login(cluster, 2, user)
        print(f"a login on node2 refused [SYS/TEMP] in {time.monotonic() - refused:.2f} s")
        haproxy_login(cluster, user).quit()
        # The whole database gone: every session fails [SYS/TEMP].
        relays[0].cut()
        for index in (1, 2):
            with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
                node_login(cluster, index, user)
        # Back: service returns by itself.
        relays[0].restore()
        relays[1].restore()
        returned = wait_until(lambda: cluster.servers_up() == {"node1", "node2"}, 30,
                              "both nodes back")
        print(f"both nodes back in HAProxy {returned:.1f} s after the database returned")
        for index in (1, 2):
            node_login(cluster, index, user).quit()
        haproxy_login(cluster, user).quit()
    finally:
        stop.set()
        worker.join(30)
    assert outcomes.get("ok", 0) > 0
    assert set(outcomes) <= {"ok", "[SYS/TEMP]", "closed"}, outcomes


def test_redis_down_fails_open_and_shows(
    fault_cluster: tuple[Any, list[TCPRelay], RedisProcess]
) -> None:
    cluster, _, redis_server = fault_cluster
    user = new_user(cluster, messages=1)
    redis_server.stop()
    for index in (1, 2):
        client = node_login(cluster, index, user)  # fails open: the login goes through
        assert client.stat()[0] == 1
        client.quit()
    haproxy_login(cluster, user).quit()
    assert cluster.servers_up() == {"node1", "node2"}  # Redis is not a health matter

    def counted() -> bool:
        text = cluster.nodes[0].metrics()
        found = re.search(r'popframe_backend_errors_total\{backend="throttle",kind="\w+"\} '
                          r'([0-9.]+)', text)
        return found is not None and float(found.group(1)) > 0

    wait_until(counted, 15, "throttle errors in the metrics")


# -- the script ----------------------------------------------------------------------------


def test_the_script_prints_its_ports_and_stops_everything(tmp_path: Path) -> None:
    """``run.py`` as an admin runs it: the ports are printed, they serve,
    and SIGTERM stops HAProxy and the nodes and drops the database."""
    import subprocess
    import sys

    from cluster_support import EXAMPLE

    haproxy()
    redis_or_skip(REDIS_URL)
    admin_connection("postgresql").close()
    script = subprocess.Popen([sys.executable, str(EXAMPLE), "--dir", str(tmp_path),
                               "--redis", REDIS_URL, "--postgresql", ADMIN_URLS["postgresql"]],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert script.stdout is not None
    output = []
    try:
        for line in script.stdout:  # bounded: the script's own steps time out
            output.append(line.decode())
            if line.startswith(b"Ctrl-C"):
                break
        text = "".join(output)
        port = int(re.search(r"pop3  \(STLS\)\s+127\.0\.0\.1:(\d+)", text).group(1))  # type: ignore[union-attr]
        pids = [int(p) for p in re.findall(r"pid (\d+)", text)]
        database = re.search(r"database (\w+)", text).group(1)  # type: ignore[union-attr]
        assert len(pids) == 3, text  # HAProxy and two nodes
        client = poplib.POP3("127.0.0.1", port, timeout=15)
        client.stls(context=insecure_context())
        client.user("alice")
        client.pass_("alice's password")
        assert client.stat()[0] == 1  # the welcome message
        client.quit()
    finally:
        script.send_signal(signal.SIGTERM)
        rest = script.communicate(timeout=120)[0].decode()
    assert script.returncode == 0, rest
    assert "popframe cluster stopped" in rest
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    admin = admin_connection("postgresql")
    cursor = admin.cursor()
    cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
    assert cursor.fetchone() is None
    admin.close()


def test_a_node_whose_port_was_taken_starts_on_fresh_ones(tmp_path: Path) -> None:
    """Ports are picked before the nodes bind them: one taken meanwhile
    (seen once in CI) makes that node start again on fresh ports."""
    haproxy()
    redis_or_skip(REDIS_URL)
    admin_connection("postgresql").close()
    cluster = load_example().Cluster(tmp_path, redis=REDIS_URL,
                                     postgresql=ADMIN_URLS["postgresql"])
    taken = cluster.nodes[1].metrics_port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        try:
            cluster.start()
            assert cluster.nodes[1].metrics_port != taken
            assert "Address already in use" in cluster.nodes[1].log.read_text()
            assert cluster.nodes[1].health() == 200 and cluster.nodes[0].health() == 200
        finally:
            cluster.stop()

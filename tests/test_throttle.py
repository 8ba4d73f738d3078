"""Failed-login throttling: growing delays, drops, per-address blocks.

In memory with fake clocks (no sleeping), then the Redis store against the
real Redis, then real servers on loopback: many failures from 127.0.0.1
while 127.0.0.2 logs in undelayed, and two processes sharing Redis counts.
"""

from __future__ import annotations

import base64
import poplib
import socket
import threading
import time
from typing import Any

import pytest
from conftest import MailHome, server_args, start_server
from redis_support import RedisServer
from support.ports import free_port
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.python import usage
from zope.interface import implementer

from popframe.protocol.encoding import wire_size
from popframe.server import ServerConfig
from popframe.stores import run_synchronously
from popframe.tap import Options
from popframe.testing import MemoryChecker, MemoryStore, connect_in_memory, failure_of, result_of
from popframe.throttle import (
    IThrottleStore,
    MemoryThrottleStore,
    RedisThrottleStore,
    StoreUnavailable,
    Throttle,
    address_key,
    throttle_store_from_description,
)

pytestmark = pytest.mark.adapter

USERS = {"alice": "secret", "bob": "hunter2"}
MESSAGE = b"Subject: hi\n\nhello\n"
WELCOME = b"+OK maildrop has 1 messages (%d octets)\r\n" % wire_size(MESSAGE)
FAILED = b"-ERR [AUTH] authentication failed\r\n"
TOO_MANY = b"-ERR [AUTH] too many failures\r\n"


# -- helpers --------------------------------------------------------------------



def make_throttle(clock: Clock | None = None, **settings: Any) -> Throttle:
    settings.setdefault("max_auth_failures", 0)
    settings.setdefault("max_ip_failures", 0)
    return Throttle(MemoryThrottleStore(clock or Clock()), **settings)


def connect(throttle: Throttle | None, host: str = "127.0.0.1", checker: Any = None,
            store: MemoryStore | None = None, **config: Any) -> Any:
    return connect_in_memory(
        store or MemoryStore({"alice": [MESSAGE], "bob": []}),
        checker or MemoryChecker(USERS), ServerConfig(throttle=throttle, **config),
        peer=IPv4Address("TCP", host, 40000),
    )


def pending_delay(conn: Any) -> float | None:
    """Seconds until the server's next scheduled reply (not the idle timeout)."""
    now = conn.clock.seconds()
    delays = [call.getTime() - now for call in conn.clock.getDelayedCalls()
              if call.getTime() - now < 300]
    return min(delays) if delays else None


def answer(conn: Any, data: bytes) -> tuple[float, bytes]:
    """Send ``data``; return how long the server held its answer (on the
    fake clock) and everything it sent in the end."""
    start = len(conn.client.received)
    conn.send(data)
    held = 0.0
    while (delay := pending_delay(conn)) is not None:
        conn.clock.advance(delay)
        conn.pump.flush()
        held += delay
    return held, bytes(conn.client.received[start:])


def fail_login(conn: Any, user: str = "alice") -> tuple[float, bytes]:
    """A wrong password: (delay, the PASS reply)."""
    assert conn.send(b"USER %s\r\n" % user.encode()) == b"+OK send your password\r\n"
    return answer(conn, b"PASS wrong\r\n")


def good_login(conn: Any, user: str = "alice") -> tuple[float, bytes]:
    conn.send(b"USER %s\r\n" % user.encode())
    return answer(conn, b"PASS %s\r\n" % USERS[user].encode())


# -- the policy ----------------------------------------------------------------


@pytest.mark.core
def test_delay_doubles_up_to_the_maximum() -> None:
    throttle = make_throttle(base=1, max_delay=30)
    assert [throttle.delay(n) for n in range(8)] == [0, 1, 2, 4, 8, 16, 30, 30]
    assert throttle.delay(10_000) == 30  # no float overflow
    assert make_throttle(base=0).delay(5) == 0


@pytest.mark.core
def test_address_keys() -> None:
    assert address_key(IPv4Address("TCP", "192.0.2.7", 1)) == "192.0.2.7"
    # One IPv6 host usually has a whole /64.
    assert address_key(IPv6Address("TCP", "2001:db8:1:2:3:4:5:6", 1)) == "2001:db8:1:2::/64"
    assert address_key(IPv6Address("TCP", "2001:db8:1:2::9", 1)) == "2001:db8:1:2::/64"
    assert address_key(IPv6Address("TCP", "::ffff:192.0.2.7", 1)) == "192.0.2.7"
    assert address_key(IPv6Address("TCP", "fe80::1%eth0", 1)) == "fe80::/64"
    assert address_key(UNIXAddress(b"/run/pop3.sock")) == "unix"


@pytest.mark.core
def test_memory_store_counts_expire_after_the_window() -> None:
    clock = Clock()
    store = MemoryThrottleStore(clock)
    assert result_of(store.increment(["a", "b"], 10)) == [1, 1]
    clock.advance(6)
    assert result_of(store.increment(["a"], 10)) == [2]
    # The window runs from the first failure, not the last.
    clock.advance(4)
    assert result_of(store.counts(["a", "b", "c"])) == [0, 0, 0]
    assert result_of(store.increment(["a"], 10)) == [1]
    store.reset("a")
    assert result_of(store.counts(["a"])) == [0]


@pytest.mark.core
def test_memory_store_claims() -> None:
    clock = Clock()
    store = MemoryThrottleStore(clock)
    assert result_of(store.claim("k", 5)) is True
    assert result_of(store.claim("k", 5)) is False
    clock.advance(5)
    assert result_of(store.claim("k", 5)) is True


@pytest.mark.core
def test_memory_store_is_bounded_and_keeps_active_keys() -> None:
    clock = Clock()
    store = MemoryThrottleStore(clock, max_entries=100)
    store.increment(["fail:ip:attacker"], 60)
    for n in range(1000):  # a flood of made-up user names
        store.increment([f"fail:user:u{n}", "fail:ip:attacker"], 60)
    assert len(store) <= 100
    assert result_of(store.counts(["fail:ip:attacker"])) == [1001]


# -- in memory: delays, pipelining, drops ----------------------------------------


def test_failures_wait_longer_and_longer() -> None:
    conn = connect(make_throttle(base=1, max_delay=4))
    delays = []
    for _ in range(5):
        delay, reply = fail_login(conn)
        assert reply == FAILED
        delays.append(delay)
    assert delays == [1, 2, 4, 4, 4]
    assert not conn.client.lost


def test_the_reply_is_held_for_the_whole_delay() -> None:
    conn = connect(make_throttle(base=2))
    conn.send(b"USER alice\r\n")
    assert conn.send(b"PASS wrong\r\n") == b""
    conn.clock.advance(1.999)
    conn.pump.flush()
    assert conn.client.received.endswith(b"+OK send your password\r\n")
    conn.clock.advance(0.001)
    conn.pump.flush()
    assert conn.client.received.endswith(FAILED)


def test_pipelined_commands_wait_for_the_delayed_reply() -> None:
    conn = connect(make_throttle(base=4))
    conn.send(b"USER alice\r\n")
    delay, replies = answer(conn, b"PASS wrong\r\nNOOP\r\nUSER alice\r\nPASS secret\r\nSTAT\r\n")
    assert delay == 4
    assert replies == (
        FAILED
        + b"-ERR command not valid in this state\r\n"
        + b"+OK send your password\r\n"
        + WELCOME
        + b"+OK 1 %d\r\n" % wire_size(MESSAGE)
    )


def test_connection_dropped_at_its_failure_limit(logged) -> None:
    conn = connect(make_throttle(base=1, max_auth_failures=3))
    assert fail_login(conn) == (1, FAILED)
    assert fail_login(conn) == (2, FAILED)
    # The last answer is delayed too: it tells that the password was wrong.
    assert fail_login(conn) == (4, TOO_MANY)
    assert conn.client.lost
    failures = [line for line in logged if line.startswith("login failed")]
    assert len(failures) == 3
    assert failures[-1].endswith("failures=3 delay=4s action=drop")
    assert "action" not in failures[0]


def test_success_is_never_delayed_and_resets_the_user_count() -> None:
    clock = Clock()
    throttle = make_throttle(clock, base=1, max_delay=60)
    conn = connect(throttle)
    for _ in range(4):
        fail_login(conn)
    assert good_login(conn) == (0, WELCOME)
    # alice's count is forgotten, 127.0.0.1's is not (5th failure from it).
    other = connect(throttle, "127.0.0.2")
    assert fail_login(other) == (1, FAILED)
    again = connect(throttle, "127.0.0.1")
    assert fail_login(again, "bob") == (16, FAILED)


def test_attacker_cannot_delay_the_legitimate_user_from_elsewhere() -> None:
    throttle = make_throttle(base=1, max_delay=30)
    attacker = connect(throttle, "127.0.0.1")
    for _ in range(10):
        fail_login(attacker)
    assert fail_login(attacker)[0] == 30
    # alice, from her own address: her correct password gets in at once...
    legit = connect(throttle, "127.0.0.2")
    assert good_login(legit) == (0, WELCOME)
    # ...and while alice's name was under attack, a typo of hers was slowed
    # by the name's count, not blocked.
    attacker2 = connect(throttle, "127.0.0.1")
    for _ in range(3):
        fail_login(attacker2)
    typo = connect(throttle, "127.0.0.3")
    assert fail_login(typo) == (8, FAILED)  # alice's 4th failure
    assert good_login(typo)[0] == 0


def test_unknown_and_existing_users_are_throttled_alike() -> None:
    throttle = make_throttle(base=1)
    results = []
    for n, user in enumerate(["alice", "nobody", "bob", "nobody2"]):
        conn = connect(throttle, f"127.0.1.{n}")
        results.append(fail_login(conn, user))
    assert results == [(1, FAILED)] * 4


def test_address_blocked_at_its_limit_until_the_window_ends(logged) -> None:
    clock = Clock()
    throttle = make_throttle(clock, base=1, max_ip_failures=3, window=900)
    first = connect(throttle)
    assert fail_login(first) == (1, FAILED)
    assert fail_login(first) == (2, FAILED)
    assert fail_login(first) == (4, TOO_MANY)
    assert first.client.lost
    # Now even the right password from that address is refused unchecked,
    # at once: there is nothing to learn from this answer.
    blocked = connect(throttle)
    assert good_login(blocked) == (0, TOO_MANY)
    assert blocked.client.lost
    assert any(line.startswith("login failed mechanism=USER user='alice' peer=127.0.0.1:40000")
               and "reason=TooManyFailures action=drop" in line for line in logged)
    # Other addresses are not affected.
    assert good_login(connect(throttle, "127.0.0.2"))[0] == 0
    clock.advance(900)
    assert good_login(connect(throttle))[1] == WELCOME


def test_counts_are_forgotten_after_the_window() -> None:
    clock = Clock()
    throttle = make_throttle(clock, base=1, window=60)
    for _ in range(3):
        fail_login(connect(throttle))
    assert fail_login(connect(throttle))[0] == 8
    clock.advance(60)
    assert fail_login(connect(throttle))[0] == 1


def test_failures_in_the_core_are_throttled_and_logged(logged) -> None:
    conn = connect(make_throttle(base=1, max_auth_failures=2))
    garbage = base64.b64encode(b"no separators").decode()
    assert answer(conn, f"AUTH PLAIN {garbage}\r\n".encode()) == (1, FAILED)
    assert answer(conn, f"AUTH PLAIN {garbage}\r\n".encode()) == (2, TOO_MANY)
    assert conn.client.lost
    assert len([line for line in logged if line.startswith("login failed")]) == 2


def test_wrong_scram_proof_is_throttled_with_its_user_name(tmp_path, logged) -> None:
    scramp = pytest.importorskip("scramp")
    from popframe.auth.passwdfile import PasswdFileChecker
    from popframe.auth.schemes import make_hash

    users = tmp_path / "users"
    users.write_text(f"alice:{make_hash('SCRAM-SHA-256', b'secret')}::::::\n")
    checker = PasswdFileChecker(users, run_blocking=run_synchronously)
    throttle = make_throttle(base=1)
    for attempt, user in enumerate(["alice", "nobody"], 1):
        conn = connect(throttle, checker=checker, mechanisms=("SCRAM-SHA-256",))
        client = scramp.ScramClient(["SCRAM-SHA-256"], user, "wrong")
        first = base64.b64encode(client.get_client_first().encode())
        server_first = conn.send(b"AUTH SCRAM-SHA-256 " + first + b"\r\n")
        client.set_server_first(base64.b64decode(server_first[2:-2]).decode())
        final = base64.b64encode(client.get_client_final().encode())
        # Unknown or not, the proof fails the same, after the same delay.
        assert answer(conn, final + b"\r\n") == (2 ** (attempt - 1), FAILED)
    failures = [line for line in logged if line.startswith("login failed")]
    assert [line.split(" peer=")[0] for line in failures] == [
        "login failed mechanism=SCRAM-SHA-256 user='alice'",
        "login failed mechanism=SCRAM-SHA-256 user='nobody'",
    ]


def test_core_failures_are_logged_without_throttling(logged) -> None:
    conn = connect(None)
    garbage = base64.b64encode(b"no separators").decode()
    assert answer(conn, f"AUTH PLAIN {garbage}\r\n".encode()) == (0, FAILED)
    failures = [line for line in logged if line.startswith("login failed")]
    assert len(failures) == 1 and failures[0].startswith("login failed mechanism=PLAIN user=- ")


def test_sasl_and_user_pass_share_the_counts() -> None:
    conn = connect(make_throttle(base=1))
    fail_login(conn)
    wrong = base64.b64encode(b"\0alice\0wrong").decode()
    assert answer(conn, f"AUTH PLAIN {wrong}\r\n".encode()) == (2, FAILED)


def test_other_refusals_are_not_counted() -> None:
    throttle = make_throttle(base=1)
    store = MemoryStore({"alice": [MESSAGE]})
    first = connect(throttle, store=store)
    good_login(first)
    second = connect(throttle, store=store)  # alice's maildrop is locked: [IN-USE], not a failure
    assert good_login(second) == (0, b"-ERR [IN-USE] maildrop already locked by another session\r\n")
    assert fail_login(second) == (1, FAILED)


def test_client_leaving_during_the_delay() -> None:
    conn = connect(make_throttle(base=5))
    conn.send(b"USER alice\r\nPASS wrong\r\n")
    conn.disconnect()
    conn.clock.advance(5)
    conn.pump.flush()
    assert conn.client.received.endswith(b"+OK send your password\r\n")


def test_secrets_never_logged(logged) -> None:
    conn = connect(make_throttle(base=1, max_auth_failures=2))
    conn.send(b"USER alice\r\n")
    answer(conn, b"PASS s3cr3t-guess\r\n")
    conn.send(b"USER alice\r\n")
    answer(conn, b"PASS s3cr3t-guess\r\n")
    text = "\n".join(logged)
    assert "s3cr3t" not in text
    assert text.count("login failed mechanism=USER user='alice' peer=127.0.0.1:40000 tls=False") == 2


@implementer(IThrottleStore)
class BrokenStore:
    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls = 0

    def _fail(self, *args: Any) -> Deferred:
        self.calls += 1
        return fail(self.error)

    increment = counts = reset = claim = _fail


@pytest.mark.parametrize("error", [StoreUnavailable("down"), RuntimeError("bug")])
def test_store_failure_fails_open(logged, error: Exception) -> None:
    store = BrokenStore(error)
    throttle = Throttle(store, base=1, max_auth_failures=3, max_ip_failures=5)
    conn = connect(throttle)
    # The connection's own count still delays and drops.
    assert fail_login(conn) == (1, FAILED)
    assert fail_login(conn) == (2, FAILED)
    assert fail_login(conn) == (4, TOO_MANY)
    assert good_login(connect(throttle))[1] == WELCOME
    assert store.calls >= 4
    if isinstance(error, RuntimeError):
        assert any("throttle store failed; letting the login through" in line for line in logged)


# -- options ---------------------------------------------------------------------


def parse(tmp_path, *extra: str) -> Options:
    users = tmp_path / "users"
    users.write_text("alice:{PLAIN}secret::::::\n")
    options = Options()
    options.parseOptions([
        "--listen", "tcp:0", "--store", f"maildir:{tmp_path}/%u", "--auth",
        f"passwd-file:{users}", *extra,
    ])
    return options


@pytest.mark.core
def test_option_defaults(tmp_path) -> None:
    options = parse(tmp_path)
    throttle = options.throttle
    assert isinstance(throttle.store, MemoryThrottleStore)
    assert (throttle.base, throttle.max_delay, throttle.window) == (1.0, 30.0, 900.0)
    assert (throttle.max_auth_failures, throttle.max_ip_failures) == (3, 100)
    assert options.login_delay_policy.store is throttle.store
    assert options.login_delay_policy.default is None


@pytest.mark.core
def test_options_build_the_factory_config(tmp_path) -> None:
    from popframe.assembly import make_factory
    from popframe.settings import Settings

    options = parse(tmp_path, "--throttle-base", "0.5", "--throttle-max", "8",
                    "--throttle-window", "60", "--max-auth-failures", "5",
                    "--max-ip-failures", "0", "--throttle-store", "redis://127.0.0.1:6379/3",
                    "--throttle-prefix", "pf:", "--login-delay", "300")
    config = make_factory(Settings.from_options(options), Clock()).config
    throttle = config.throttle
    assert (throttle.base, throttle.max_delay, throttle.window) == (0.5, 8.0, 60.0)
    assert (throttle.max_auth_failures, throttle.max_ip_failures) == (5, 0)
    assert isinstance(throttle.store, RedisThrottleStore)
    assert throttle.store.prefix == "pf:"
    assert config.login_delay.default == 300
    assert config.login_delay.store is throttle.store


@pytest.mark.core
@pytest.mark.parametrize("extra, message", [
    (["--throttle-base", "-1"], "--throttle-base: must not be negative"),
    (["--throttle-base", "10", "--throttle-max", "5"], "--throttle-max: must not be less"),
    (["--throttle-window", "0"], "--throttle-window: must be positive"),
    (["--max-auth-failures", "-1"], "--max-auth-failures: must not be negative"),
    (["--throttle-store", "memcached://x"], "--throttle-store: 'memcached://x': use memory or"),
    (["--login-delay", "-5"], "--login-delay: must not be negative"),
])
def test_bad_options(tmp_path, extra: list[str], message: str) -> None:
    with pytest.raises(usage.UsageError, match=message.replace("(", r"\(")):
        parse(tmp_path, *extra)


@pytest.mark.core
def test_redis_url_password_is_not_logged() -> None:
    store = throttle_store_from_description("redis://:topsecret@127.0.0.1:6379/0")
    assert "topsecret" not in repr(store)


# -- the Redis store against the real Redis -----------------------------------------


def redis_store(server: RedisServer, **kwargs: Any) -> RedisThrottleStore:
    # Run redis-py at once in the test's thread instead of a thread pool.
    return RedisThrottleStore(server.url, server.prefix,
                              run_blocking=run_synchronously, **kwargs)


@pytest.mark.external
def test_redis_store_counts_atomically_with_expiry(redis_server: RedisServer) -> None:
    store = redis_store(redis_server)
    client = redis_server.client
    assert result_of(store.increment(["fail:ip:a", "fail:user:x"], 60)) == [1, 1]
    assert result_of(store.increment(["fail:ip:a"], 60)) == [2]
    assert result_of(store.counts(["fail:ip:a", "fail:user:x", "fail:user:y"])) == [2, 1, 0]
    ttl = client.pttl(redis_server.prefix + "fail:ip:a")
    assert 0 < ttl <= 60_000
    # A count whose expiry was lost (a crash between two commands of an old
    # client) gets one again.
    client.set(redis_server.prefix + "fail:ip:b", 5)
    assert result_of(store.increment(["fail:ip:b"], 60)) == [6]
    assert 0 < client.pttl(redis_server.prefix + "fail:ip:b") <= 60_000
    store.reset("fail:ip:a")
    assert result_of(store.counts(["fail:ip:a"])) == [0]
    store.close()


@pytest.mark.external
def test_redis_store_window_is_fixed(redis_server: RedisServer) -> None:
    store = redis_store(redis_server)
    key = redis_server.prefix + "k"
    store.increment(["k"], 60)
    redis_server.client.pexpire(key, 30_000)  # as if 30 s had passed
    assert result_of(store.increment(["k"], 60)) == [2]
    assert 0 < redis_server.client.pttl(key) <= 30_000  # not extended
    store.close()


@pytest.mark.external
def test_redis_store_claims(redis_server: RedisServer) -> None:
    store = redis_store(redis_server)
    assert result_of(store.claim("login:alice", 60)) is True
    assert result_of(store.claim("login:alice", 60)) is False
    assert 0 < redis_server.client.pttl(redis_server.prefix + "login:alice") <= 60_000
    store.close()


@pytest.mark.external
def test_redis_store_keys_have_the_prefix(redis_server: RedisServer) -> None:
    store = redis_store(redis_server)
    store.increment(["fail:user:alice"], 60)
    keys = {key.decode() for key in redis_server.client.scan_iter(match=redis_server.prefix + "*")}
    assert keys == {redis_server.prefix + "fail:user:alice"}
    store.close()


@pytest.mark.process
def test_redis_outage_fails_open_and_fast(logged) -> None:
    # Nothing listens on this port: connections are refused at once.
    store = RedisThrottleStore(f"redis://127.0.0.1:{free_port()}/0", run_blocking=run_synchronously)
    throttle = Throttle(store, base=1, max_auth_failures=0, max_ip_failures=10)
    conn = connect(throttle)
    assert fail_login(conn) == (1, FAILED)  # the store's count reads as 0
    assert good_login(connect(throttle))[1].startswith(b"+OK")
    errors = [line for line in logged if "throttle store redis://127.0.0.1" in line]
    assert len(errors) == 1  # once per outage, not once per login
    # Within retry_after the store is not even asked.
    d = store.counts(["x"])
    failure_of(d, StoreUnavailable)


# -- real servers on loopback ------------------------------------------------------------


class POP3From(poplib.POP3):
    """poplib.POP3 from a chosen source address (all of 127/8 is loopback)."""

    def __init__(self, port: int, source: str) -> None:
        self.source = source
        super().__init__("127.0.0.1", port, timeout=60)

    def _create_socket(self, timeout: float) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout,
                                        source_address=(self.source, 0))


def timed_login(port: int, user: str, password: str, source: str) -> tuple[float, bytes]:
    """USER/PASS from ``source``: (seconds PASS took, its reply line)."""
    client = POP3From(port, source)
    try:
        client.user(user)
        start = time.monotonic()
        try:
            reply = client.pass_(password)
        except poplib.error_proto as error:
            return time.monotonic() - start, error.args[0]
        took = time.monotonic() - start
        client.quit()  # answered once the maildrop is unlocked
        return took, reply
    finally:
        client.close()


@pytest.fixture
def home(mail_home: MailHome) -> MailHome:
    mail_home.add_user("alice", "alice password")
    mail_home.add_user("bob", "bob password")
    return mail_home


@pytest.mark.process
def test_many_failures_from_one_address_while_another_logs_in(home: MailHome) -> None:
    # 127.0.0.1 and 127.0.0.2 stand for two remote clients: trust neither
    # (loopback is a trusted network by default, exempt from address counts).
    server = start_server(server_args(home, "--throttle-base", "0.2", "--throttle-max", "1.2",
                                      "--max-auth-failures", "3", "--max-ip-failures", "9",
                                      "--trusted-networks", "none"),
                          home.root, listeners=2)
    try:
        attack_results: list[tuple[float, bytes]] = []

        def attack() -> None:
            # Failures for alice from 127.0.0.1 over several connections.
            while len(attack_results) < 9:
                client = POP3From(server.port, "127.0.0.1")
                try:
                    for _ in range(3):
                        client.user("alice")
                        start = time.monotonic()
                        try:
                            client.pass_("guess")
                        except poplib.error_proto as error:
                            attack_results.append((time.monotonic() - start, error.args[0]))
                except (OSError, EOFError, poplib.error_proto):
                    pass
                finally:
                    client.close()

        attacker = threading.Thread(target=attack)
        attacker.start()
        legit: list[float] = []
        while attacker.is_alive():
            took, reply = timed_login(server.port, "alice", "alice password", "127.0.0.2")
            assert reply.startswith(b"+OK"), reply
            legit.append(took)
        attacker.join()

        assert len(attack_results) == 9
        delays = [took for took, _ in attack_results]
        # The attacker waited ever longer, up to the 1.2 s maximum...
        assert delays[0] >= 0.2 and delays[1] >= 0.4 and delays[2] >= 0.8
        assert all(took >= 1.2 for took in delays[3:])
        assert [reply == TOO_MANY.strip() for _, reply in attack_results] == [False, False, True] * 3
        # ...while alice logged in again and again, undelayed, from 127.0.0.2.
        assert len(legit) >= 3
        assert max(legit) < 0.6, legit
        # 127.0.0.1 reached --max-ip-failures: refused at once, even with the
        # right password; 127.0.0.2 is not.
        took, reply = timed_login(server.port, "alice", "alice password", "127.0.0.1")
        assert reply == TOO_MANY.strip() and took < 0.6
        took, reply = timed_login(server.port, "bob", "wrong", "127.0.0.2")
        assert reply == FAILED.strip() and 0.2 <= took < 0.6
    finally:
        server.stop()
    log = server.log.read_text()
    assert log.count("login failed mechanism=USER user='alice' peer=127.0.0.1:") == 10
    assert "guess" not in log and "alice password" not in log


@pytest.mark.external
def test_two_servers_share_counts_in_redis(home: MailHome, redis_server: RedisServer) -> None:
    shared = ("--throttle-store", redis_server.url, "--throttle-prefix", redis_server.prefix,
              "--throttle-base", "0.2", "--throttle-max", "5", "--max-ip-failures", "4",
              "--trusted-networks", "none")  # 127.0.0.x stand for remote clients
    first = start_server(server_args(home, *shared), home.root, listeners=2)
    second_root = home.root / "second"
    second_root.mkdir()
    second = start_server(server_args(home, *shared), second_root, listeners=2)
    try:
        assert timed_login(first.port, "bob", "wrong", "127.0.0.1")[0] >= 0.2
        assert timed_login(first.port, "bob", "wrong", "127.0.0.1")[0] >= 0.4
        # The second process sees both failures: its first one waits 0.8 s.
        took, reply = timed_login(second.port, "alice", "wrong", "127.0.0.1")
        assert (took >= 0.8, reply) == (True, FAILED.strip())
        took, reply = timed_login(second.port, "alice", "wrong", "127.0.0.1")
        assert (took >= 1.6, reply) == (True, TOO_MANY.strip())
        # 127.0.0.1 is blocked on both servers now; 127.0.0.2 is not.
        for server in (first, second):
            assert timed_login(server.port, "alice", "alice password", "127.0.0.1")[1] == TOO_MANY.strip()
        assert timed_login(first.port, "alice", "alice password", "127.0.0.2")[1].startswith(b"+OK")
        counts = redis_server.client.get(redis_server.prefix + "fail:ip:127.0.0.1")
        assert int(counts) == 4
    finally:
        first.stop()
        second.stop()

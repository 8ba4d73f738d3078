"""RFC 2449 LOGIN-DELAY: advertised in CAPA, enforced after the password
is verified, per user when the checker knows one, shared through Redis."""

from __future__ import annotations

import base64
import poplib
from typing import Any

import pytest
from conftest import MailHome, server_args, start_server
from redis_support import RedisServer
from support.clients import pop3_login
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from zope.interface import implementer

from popframe.auth.passwdfile import PasswdFileChecker
from popframe.interfaces import IThrottleStore, IUserSettings, StoreUnavailable, UserSettings
from popframe.logindelay import LoginDelay
from popframe.server import ServerConfig
from popframe.stores import run_synchronously
from popframe.testing import MemoryChecker, MemoryStore, connect_in_memory, result_of
from popframe.throttle import MemoryThrottleStore

pytestmark = pytest.mark.adapter

USERS = {"alice": "secret", "bob": "hunter2", "carol": "pw", "admin": "root"}
DELAYED = b"-ERR [LOGIN-DELAY] login delay not yet expired\r\n"
FAILED = b"-ERR [AUTH] authentication failed\r\n"


@implementer(IUserSettings)
class SettingsChecker(MemoryChecker):
    """A checker that knows some users' own login delays."""

    def __init__(self, users: dict[str, str], delays: dict[str, int | None]) -> None:
        super().__init__(users)
        self.delays = delays
        self.asked: list[str] = []

    def user_settings(self, user: str) -> Deferred[UserSettings | None]:
        self.asked.append(user)
        return succeed(UserSettings(login_delay=self.delays.get(user)))


class Server:
    """One popframe, many in-memory connections, one store clock."""

    def __init__(self, default: int | None = 60, checker: Any = None,
                 throttle_store: Any = None, **config: Any) -> None:
        self.clock = Clock()
        self.store = MemoryStore({user: [b"Subject: x\n\nbody\n"] for user in USERS})
        self.checker = checker or MemoryChecker(USERS)
        policy = LoginDelay(throttle_store or MemoryThrottleStore(self.clock), default)
        self.config = ServerConfig(login_delay=policy, **config)

    def connect(self, host: str = "127.0.0.1") -> Any:
        return connect_in_memory(self.store, self.checker, self.config,
                                 peer=IPv4Address("TCP", host, 40000))

    def login(self, user: str = "alice", password: str | None = None, quit: bool = True) -> bytes:
        conn = self.connect()
        conn.send(b"USER %s\r\n" % user.encode())
        reply = conn.send(b"PASS %s\r\n" % (password or USERS[user]).encode())
        if quit and reply.startswith(b"+OK"):
            conn.send(b"QUIT\r\n")
        return reply


def capa(conn: Any) -> list[bytes]:
    return conn.send(b"CAPA\r\n").split(b"\r\n")[1:-2]


def test_advertised_in_authorization() -> None:
    assert b"LOGIN-DELAY 60" in capa(Server(60).connect())  # (no per-user values)
    assert not any(line.startswith(b"LOGIN-DELAY") for line in capa(Server(None).connect()))


def test_login_too_soon_is_refused_until_the_delay_passes() -> None:
    server = Server(60)
    assert server.login().startswith(b"+OK maildrop has 1 messages")
    assert server.login() == DELAYED
    server.clock.advance(59)
    assert server.login() == DELAYED  # refusals do not extend the delay
    server.clock.advance(1)
    assert server.login().startswith(b"+OK")
    assert server.login() == DELAYED
    # Other users are not affected.
    assert server.login("bob").startswith(b"+OK")


def test_wrong_password_gets_auth_not_login_delay() -> None:
    server = Server(60)
    server.login()
    assert server.login(password="wrong") == FAILED
    assert server.login("nobody", password="x") == FAILED


def test_refusal_releases_the_maildrop(logged) -> None:
    server = Server(60)
    server.login()
    refused = server.connect()
    refused.send(b"USER alice\r\n")
    assert refused.send(b"PASS secret\r\n") == DELAYED
    assert "alice" not in server.store.locker.held
    # The refused client may try again later on the same connection.
    server.clock.advance(60)
    refused.send(b"USER alice\r\n")
    assert refused.send(b"PASS secret\r\n").startswith(b"+OK")
    lines = [line for line in logged if line.startswith("login ")]
    assert lines[0].startswith("login ok mechanism=USER user='alice'")
    assert lines[1] == ("login failed mechanism=USER user='alice' peer=127.0.0.1:40000 "
                        "tls=False reason=LoginDelayed")
    assert lines[2].startswith("login ok mechanism=USER user='alice'")
    assert len(lines) == 3


def test_per_user_delays_from_the_checker() -> None:
    checker = SettingsChecker(USERS, {"alice": 300, "carol": 0})
    server = Server(60, checker)
    conn = server.connect()
    # RFC 2449 section 6.5: before login, the default and "USER" (it may
    # vary by user); in TRANSACTION, the user's own value.
    assert b"LOGIN-DELAY 60 USER" in capa(conn)
    conn.send(b"USER alice\r\nPASS secret\r\n")
    assert b"LOGIN-DELAY 300" in capa(conn)
    conn.send(b"QUIT\r\n")
    server.clock.advance(60)
    assert server.login() == DELAYED
    server.clock.advance(240)
    assert server.login().startswith(b"+OK")
    # bob has no value of his own: the default.
    server.login("bob")
    server.clock.advance(60)
    assert server.login("bob").startswith(b"+OK")
    # carol's 0: no delay at all.
    assert server.login("carol").startswith(b"+OK")
    assert server.login("carol").startswith(b"+OK")
    # The settings are asked only after the password was verified.
    before = len(checker.asked)
    server.login("alice", "wrong")
    assert len(checker.asked) == before


def test_per_user_delay_without_a_default() -> None:
    server = Server(None, SettingsChecker(USERS, {"alice": 30}))
    conn = server.connect()
    assert not any(line.startswith(b"LOGIN-DELAY") for line in capa(conn))
    conn.send(b"USER alice\r\nPASS secret\r\n")
    assert b"LOGIN-DELAY 30" in capa(conn)
    conn.send(b"QUIT\r\n")
    assert server.login() == DELAYED
    assert server.login("bob").startswith(b"+OK")
    assert server.login("bob").startswith(b"+OK")


def test_master_user_login_counts_for_the_target_user() -> None:
    server = Server(60, master_users=frozenset({"admin"}))
    conn = server.connect()
    plain = base64.b64encode(b"alice\0admin\0root").decode()
    assert conn.send(f"AUTH PLAIN {plain}\r\n".encode()).startswith(b"+OK")
    conn.send(b"QUIT\r\n")
    assert server.login() == DELAYED


def test_passwd_file_login_delay_field(tmp_path) -> None:
    users = tmp_path / "users"
    users.write_text(
        "alice:{PLAIN}secret::::::login_delay=120\n"
        "bob:{PLAIN}hunter2::::::\n"
    )  # (a field popframe cannot honour stops the start: tests/test_passwd_fields.py)
    checker = PasswdFileChecker(users, run_blocking=run_synchronously)
    assert IUserSettings.providedBy(checker)
    assert result_of(checker.user_settings("alice")) == UserSettings(login_delay=120)
    assert result_of(checker.user_settings("bob")) == UserSettings()
    assert result_of(checker.user_settings("nobody")) is None

    server = Server(None, checker)
    conn = server.connect()
    conn.send(b"USER alice\r\nPASS secret\r\n")
    assert b"LOGIN-DELAY 120" in capa(conn)
    conn.send(b"QUIT\r\n")
    assert server.login() == DELAYED
    server.clock.advance(120)
    assert server.login().startswith(b"+OK")


@implementer(IThrottleStore)
class BrokenStore:
    def claim(self, key: str, ttl: float) -> Deferred:
        return fail(StoreUnavailable("down"))


def test_store_failure_lets_logins_through() -> None:
    server = Server(60, throttle_store=BrokenStore())
    assert server.login().startswith(b"+OK")
    assert server.login().startswith(b"+OK")


@implementer(IUserSettings)
class BrokenSettings(MemoryChecker):
    def user_settings(self, user: str) -> Deferred[UserSettings | None]:
        return fail(RuntimeError("database down"))


def test_settings_failure_is_a_temporary_failure() -> None:
    """A source of user settings that fails (its database is down) fails
    the login with [SYS/TEMP]: guessing a default could open another
    maildrop than the user's."""
    server = Server(60, BrokenSettings(USERS))
    assert server.login() == b"-ERR [SYS/TEMP] temporary system failure, try again later\r\n"
    # No delay was claimed: the next login, once the source is back, works.
    server.checker = MemoryChecker(USERS)
    assert server.login().startswith(b"+OK")


# -- real servers -------------------------------------------------------------------


@pytest.fixture
def home(mail_home: MailHome) -> MailHome:
    mail_home.add_user("alice", "alice password")
    return mail_home


@pytest.mark.process
def test_real_server_enforces_login_delay(home: MailHome) -> None:
    server = start_server(server_args(home, "--login-delay", "600"), home.root, listeners=2)
    try:
        client = poplib.POP3("127.0.0.1", server.port, timeout=10)
        assert client.capa()["LOGIN-DELAY"] == ["600", "USER"]  # passwd-file: per user
        client.user("alice")
        client.pass_("alice password")
        client.quit()
        client = poplib.POP3("127.0.0.1", server.port, timeout=10)
        client.user("alice")
        with pytest.raises(poplib.error_proto) as refused:
            client.pass_("alice password")
        assert refused.value.args[0] == DELAYED.strip()
        client.quit()
    finally:
        server.stop()
    assert "reason=LoginDelayed" in server.log.read_text()


@pytest.mark.external
def test_two_servers_share_last_logins_in_redis(home: MailHome, redis_server: RedisServer) -> None:
    shared = ("--throttle-store", redis_server.url, "--throttle-prefix", redis_server.prefix,
              "--login-delay", "600")
    first = start_server(server_args(home, *shared), home.root, listeners=2)
    second_root = home.root / "second"
    second_root.mkdir()
    second = start_server(server_args(home, *shared), second_root, listeners=2)
    try:
        pop3_login(first.port).quit()
        for server in (second, first):
            with pytest.raises(poplib.error_proto, match=r"\[LOGIN-DELAY\]"):
                pop3_login(server.port)
        ttl = redis_server.client.ttl(redis_server.prefix + "login:alice")
        assert 590 < ttl <= 600
    finally:
        first.stop()
        second.stop()

"""What sessions tell their observers (popframe/interfaces/observers.py),
in memory with a fake clock: the record of every way a session can end,
the logout line (text and JSON) built from it, the metrics recorder's
counts, and that no secret reaches a log line."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from zope.interface import implementer

from popframe.errors import TemporaryFailure
from popframe.interfaces import IMaildropLock, IMaildropLocker
from popframe.interfaces.observers import (
    EndReason,
    LimitKind,
    LoginResult,
    SessionObserver,
    SessionRecord,
)
from popframe.logindelay import LoginDelay
from popframe.ops import MetricsRecorder, session_observer
from popframe.ops.connections import Connections, TrackingFactory
from popframe.ops.exposition import exposition
from popframe.ops.logformat import event_as_json
from popframe.ops.logout import LogoutLine
from popframe.protocol.encoding import wire_size
from popframe.server import POP3Factory, ServerConfig
from popframe.server.factory import listener_name
from popframe.server.observers import SessionObservers, combine_observers
from popframe.stores.memory import MemoryMaildrop
from popframe.testing import (
    BufferedTransport,
    MemoryChecker,
    MemoryStore,
    connect_transport,
    make_portal,
)
from popframe.throttle import MemoryThrottleStore, Throttle

pytestmark = pytest.mark.adapter

PASSWORD = "s3cret-Pa55word"
USERS = {"alice": PASSWORD, "bob": "bob pw"}
MESSAGES = [b"Subject: one\n\nfirst\n", b"Subject: two\r\n\r\nsecond message\r\n"]
LOGIN = f"USER alice\r\nPASS {PASSWORD}\r\n".encode()
REMOTE = IPv4Address("TCP", "192.0.2.1", 4000)


class Closed(SessionObserver):
    """Keeps every record when its session closes, and every event."""

    def __init__(self) -> None:
        self.records: list[SessionRecord] = []
        self.events: list[tuple[Any, ...]] = []

    def session_closed(self, record: SessionRecord) -> None:
        self.records.append(record)

    def login_finished(self, record: SessionRecord, mechanism: str, result: str,
                       seconds: float) -> None:
        self.events.append(("login", mechanism, result, seconds))

    def login_throttled(self, record: SessionRecord, delay: float, dropped: str | None) -> None:
        self.events.append(("throttled", delay, dropped))

    def backend_failed(self, role: str, kind: str) -> None:
        self.events.append(("backend", role, kind))

    def connection_refused(self, limit: str, peer: str) -> None:
        self.events.append(("refused", limit, peer))


@implementer(IMaildropLock)
class _NoLock:
    def release(self) -> Any:
        return succeed(None)


@implementer(IMaildropLocker)
class NoLocker:
    """Lets every session open the maildrop: a store that allows several."""

    def acquire(self, key: str) -> Any:
        return succeed(_NoLock())


class Server:
    """A factory with the logout line, the metrics and a :class:`Closed`."""

    def __init__(self, store: MemoryStore | None = None, checker: Any = None,
                 **config: Any) -> None:
        self.clock = Clock()
        config.setdefault("allow_plaintext_auth", True)
        self.store = store or MemoryStore({"alice": list(MESSAGES)})
        self.factory = POP3Factory(make_portal(self.store, checker or MemoryChecker(USERS)),
                                   ServerConfig(**config), self.clock)
        self.closed = Closed()
        self.metrics = MetricsRecorder()
        self.factory.set_observer(SessionObservers([LogoutLine(), self.metrics, self.closed]))

    def connect(self, peer: Any = REMOTE, listener: str = "tcp:110") -> tuple[Any, BufferedTransport]:
        return connect_transport(TrackingFactory(self.factory, Connections(self.clock), listener),
                                 peer=peer)

    @property
    def record(self) -> SessionRecord:
        assert len(self.closed.records) == 1, self.closed.records
        return self.closed.records[0]


@pytest.fixture
def events() -> Any:
    """Every log event published during the test."""
    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    yield seen
    globalLogPublisher.removeObserver(seen.append)


def logout_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e.get("log_namespace") == "popframe.session"]


# -- every way a session ends ---------------------------------------------------------


def test_quit_after_retrieving_and_deleting(events: list[dict[str, Any]]) -> None:
    server = Server()
    protocol, transport = server.connect()
    server.clock.advance(0.5)
    protocol.dataReceived(LOGIN + b"RETR 1\r\nTOP 2 0\r\nDELE 2\r\n")
    server.clock.advance(2.0)
    protocol.dataReceived(b"QUIT\r\n")
    assert transport.value().endswith(b"+OK popframe signing off (1 messages left)\r\n")
    protocol.connectionLost(None)
    record = server.record
    assert (record.user, record.mechanism, record.peer, record.listener, record.tls) == (
        "alice", "USER", "192.0.2.1:4000", "tcp:110", None)
    assert (record.retrieved, record.retrieved_octets) == (1, wire_size(MESSAGES[0]))
    assert (record.top, record.top_octets) == (1, len(b"Subject: two\r\n\r\n"))
    assert (record.deleted, record.end, record.duration) == (1, EndReason.QUIT, 2.5)
    assert server.store.maildrops["alice"][0][1] == MESSAGES[0]  # 2 is gone
    [line] = logout_events(events)
    assert formatEvent(line) == (
        f"session ended user='alice' peer=192.0.2.1:4000 listener=tcp:110 tls=- "
        f"mechanism=USER retr=1/{wire_size(MESSAGES[0])} top=1/16 deleted=1 end=QUIT "
        "duration=2.500s")
    as_json = json.loads(event_as_json(line))
    assert {k: as_json[k] for k in ("user", "peer", "tls", "mechanism", "retrieved",
                                    "retrieved_octets", "top", "deleted", "end", "duration")} == {
        "user": "alice", "peer": "192.0.2.1:4000", "tls": None, "mechanism": "USER",
        "retrieved": 1, "retrieved_octets": wire_size(MESSAGES[0]), "top": 1, "deleted": 1,
        "end": "QUIT", "duration": 2.5}
    assert as_json["level"] == "info" and as_json["message"] == formatEvent(line)
    assert not [k for k in as_json if k.endswith("_text")]


def test_quit_before_login(events: list[dict[str, Any]]) -> None:
    server = Server()
    protocol, _ = server.connect()
    protocol.dataReceived(b"CAPA\r\nQUIT\r\n")
    protocol.connectionLost(None)
    assert (server.record.user, server.record.end) == (None, EndReason.QUIT)
    assert "user=- " in formatEvent(logout_events(events)[0])
    assert "mechanism=- " in formatEvent(logout_events(events)[0])


def test_idle_timeout() -> None:
    server = Server(idle_timeout=600)
    protocol, transport = server.connect()
    protocol.dataReceived(LOGIN)
    server.clock.advance(600)
    assert transport.value().endswith(b"-ERR disconnected for inactivity\r\n")
    protocol.connectionLost(None)
    assert (server.record.end, server.record.user, server.record.duration) == (
        EndReason.TIMEOUT, "alice", 600)


def test_login_timeout() -> None:
    server = Server(preauth_timeout=30)
    protocol, transport = server.connect()
    server.clock.advance(30)
    protocol.connectionLost(None)
    assert server.record.end == EndReason.LOGIN_TIMEOUT


def test_dropped_connection_deletes_nothing() -> None:
    server = Server()
    protocol, _ = server.connect()
    protocol.dataReceived(LOGIN + b"DELE 1\r\n")
    protocol.connectionLost(None)
    assert (server.record.end, server.record.deleted) == (EndReason.DROPPED, 0)
    assert len(server.store.maildrops["alice"]) == 2


def test_shutdown() -> None:
    """Sessions lost once the listeners stopped were ended by the shutdown."""
    server = Server()
    listener = TrackingFactory(server.factory, Connections(server.clock), "tcp:110")
    listener.doStart()
    protocol, _ = server.connect()
    protocol.dataReceived(LOGIN)
    listener.doStop()
    assert server.factory.stopping
    protocol.connectionLost(None)
    assert server.record.end == EndReason.SHUTDOWN


def test_too_many_failures() -> None:
    throttle = Throttle(MemoryThrottleStore(Clock()), base=0, max_auth_failures=2)
    server = Server(throttle=throttle)
    protocol, transport = server.connect()
    protocol.dataReceived(b"USER alice\r\nPASS wrong\r\nUSER alice\r\nPASS wrong again\r\n")
    assert transport.value().endswith(b"-ERR [AUTH] too many failures\r\n")
    protocol.connectionLost(None)
    assert server.record.end == EndReason.TOO_MANY_FAILURES
    logins = [e for e in server.closed.events if e[0] == "login"]
    assert [e[2] for e in logins] == [LoginResult.FAILED, LoginResult.FAILED]
    assert ("throttled", 0, "connection") in server.closed.events


def test_throttle_delay_is_reported_and_timed() -> None:
    clock = Clock()
    throttle = Throttle(MemoryThrottleStore(clock), base=2.0, max_auth_failures=5)
    server = Server(throttle=throttle)
    server.factory.clock = server.factory.logins.clock = server.clock = clock
    protocol, transport = server.connect()
    protocol.dataReceived(b"USER alice\r\nPASS wrong\r\n")
    assert not transport.value().endswith(b"failed\r\n")  # waiting out the delay
    clock.advance(2.0)
    assert transport.value().endswith(b"-ERR [AUTH] authentication failed\r\n")
    assert ("throttled", 2.0, None) in server.closed.events
    assert ("login", "USER", LoginResult.FAILED, 2.0) in server.closed.events


def test_bad_commands() -> None:
    server = Server()
    protocol, transport = server.connect()
    protocol.dataReceived(b"BOGUS\r\n" * 10)
    assert b"too many bad commands" in transport.value()
    protocol.connectionLost(None)
    assert server.record.end == EndReason.BAD_COMMANDS


def test_user_session_limit_where_the_store_allows_several() -> None:
    server = Server(MemoryStore({"alice": list(MESSAGES)}, locker=NoLocker()),
                    max_sessions_per_user=2)
    first, _ = server.connect()
    second, _ = server.connect()
    for protocol in (first, second):
        protocol.dataReceived(LOGIN)
    third, transport = server.connect()
    third.dataReceived(LOGIN)
    assert transport.value().endswith(
        b"-ERR [SYS/TEMP] too many sessions for this user, try again later\r\n")
    assert transport.disconnecting
    third.connectionLost(None)
    assert server.record.end == EndReason.LIMIT
    assert ("refused", LimitKind.PER_USER, "192.0.2.1:4000") in server.closed.events
    assert server.metrics.logins[("USER", LoginResult.LIMIT)] == 1
    # bob is not alice; and a session that ends frees its place.
    other, bob = server.connect()
    other.dataReceived(b"USER bob\r\nPASS bob pw\r\n")
    assert b"+OK maildrop has 0 messages" in bob.value()
    first.dataReceived(b"QUIT\r\n")
    first.connectionLost(None)
    fourth, again = server.connect()
    fourth.dataReceived(LOGIN)
    assert b"+OK maildrop has 2 messages" in again.value()
    assert server.factory.user_sessions.counts == {"alice": 2, "bob": 1}


@implementer(IMaildropLock)
class _CountedLock:
    def __init__(self, releases: list[str]) -> None:
        self.releases = releases

    def release(self) -> Any:
        self.releases.append("released")
        return succeed(None)


@implementer(IMaildropLocker)
class CountingLocker:
    """Lets every session open the maildrop, and counts the releases."""

    def __init__(self) -> None:
        self.releases: list[str] = []

    def acquire(self, key: str) -> Any:
        return succeed(_CountedLock(self.releases))


class _HeldDelay(LoginDelay):
    """A LOGIN-DELAY policy whose answer comes later (a remote store)."""

    def __init__(self) -> None:
        super().__init__(default=1)
        self.pending: list[Deferred[bool]] = []

    def admit(self, user: str, delay: int | None) -> Deferred[bool]:
        d: Deferred[bool] = Deferred()
        self.pending.append(d)
        return d


@pytest.mark.parametrize("answer", ["at once", "later"])
def test_a_session_refused_by_the_user_limit_releases_its_maildrop_once(answer: str) -> None:
    """LOGIN-DELAY admits the login, then --max-sessions-per-user refuses
    it: the maildrop is released exactly once."""
    locker = CountingLocker()
    policy = LoginDelay() if answer == "at once" else _HeldDelay()
    server = Server(MemoryStore({"alice": list(MESSAGES)}, locker=locker),
                    max_sessions_per_user=1, login_delay=policy)
    first, _ = server.connect()
    first.dataReceived(LOGIN)
    second, transport = server.connect()
    second.dataReceived(LOGIN)
    if isinstance(policy, _HeldDelay):
        for pending in policy.pending:
            pending.callback(True)
    assert transport.value().endswith(
        b"-ERR [SYS/TEMP] too many sessions for this user, try again later\r\n")
    assert locker.releases == ["released"]  # the refused session's, once
    first.dataReceived(b"QUIT\r\n")
    assert locker.releases == ["released", "released"]


def test_in_use_is_a_lock_conflict() -> None:
    server = Server()
    first, _ = server.connect()
    first.dataReceived(LOGIN)
    second, transport = server.connect()
    second.dataReceived(LOGIN)
    assert b"-ERR [IN-USE]" in transport.value()
    assert server.metrics.lock_conflicts == 1
    assert server.metrics.logins[("USER", LoginResult.IN_USE)] == 1


@pytest.mark.parametrize("cause, kind", [(ValueError("disk"), "error"),
                                         (TimeoutError("slow disk"), "timeout")])
def test_failed_commit_ends_in_error(monkeypatch: pytest.MonkeyPatch, cause: Exception,
                                     kind: str) -> None:
    def fail(self: Any, uids: Any) -> Any:
        raise TemporaryFailure("the store failed") from cause

    monkeypatch.setattr(MemoryMaildrop, "apply_deletions", fail)
    server = Server()
    protocol, transport = server.connect()
    protocol.dataReceived(LOGIN + b"DELE 1\r\nQUIT\r\n")
    assert transport.value().endswith(b"-ERR [SYS/TEMP] the store failed\r\n")
    protocol.connectionLost(None)
    assert (server.record.end, server.record.deleted) == (EndReason.ERROR, 0)
    assert ("backend", "store", kind) in server.closed.events
    assert server.metrics.backend_errors == {("store", kind): 1}


def test_checker_outage_is_an_auth_backend_error() -> None:
    class Broken(MemoryChecker):
        def requestAvatarId(self, credentials: Any) -> Any:
            raise TemporaryFailure("directory down")

    server = Server(checker=Broken(USERS))
    protocol, transport = server.connect()
    protocol.dataReceived(LOGIN)
    assert transport.value().endswith(b"-ERR [SYS/TEMP] directory down\r\n")
    assert ("backend", "auth", "error") in server.closed.events
    assert ("login", "USER", LoginResult.ERROR, 0) in server.closed.events


# -- no secret in any log line ---------------------------------------------------------


def test_no_password_or_token_reaches_the_log(events: list[dict[str, Any]]) -> None:
    token = "eyJhbGciOiJSUzI1NiJ9.not-a-real-token.signature"
    server = Server()
    for script in (LOGIN + b"QUIT\r\n",
                   b"USER alice\r\nPASS not-" + PASSWORD.encode() + b"\r\nQUIT\r\n",
                   b"AUTH PLAIN " + base64.b64encode(b"\0alice\0" + PASSWORD.encode()) + b"\r\n",
                   b"AUTH PLAIN " + base64.b64encode(b"\0bob\0" + token.encode()) + b"\r\n"):
        protocol, _ = server.connect(IPv4Address("TCP", "127.0.0.1", 4000))
        protocol.dataReceived(script)
        protocol.connectionLost(None)
    assert len(logout_events(events)) == 4
    secrets = [PASSWORD, token, base64.b64encode(PASSWORD.encode()).decode()]
    for event in events:
        for text in (formatEvent(event), event_as_json(event), repr(event)):
            for secret in secrets:
                assert secret not in text


# -- the metrics recorder --------------------------------------------------------------


def samples(page: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(page.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_metrics_count_what_sessions_did() -> None:
    server = Server(MemoryStore({"alice": list(MESSAGES)}, locker=NoLocker()))
    open_one, _ = server.connect(listener="ssl:995")
    open_one.record.tls = "TLS"  # as an implicit-TLS listener's would be
    done, _ = server.connect()
    done.dataReceived(LOGIN + b"RETR 1\r\nRETR 2\r\nDELE 1\r\nQUIT\r\n")
    done.connectionLost(None)
    failed, _ = server.connect()
    failed.dataReceived(b"USER alice\r\nPASS nope\r\n")
    failed.connectionLost(None)
    page = samples(exposition(server.metrics.snapshot(),
                                 {("/etc/cert.pem", "pop.example.org"): 1.9e9}))
    octets = wire_size(MESSAGES[0]) + wire_size(MESSAGES[1])
    expected = {
        ("popframe_sessions_total", (("end", "QUIT"), ("listener", "tcp:110"), ("tls", "no"))): 1,
        ("popframe_sessions_total", (("end", "dropped"), ("listener", "tcp:110"), ("tls", "no"))): 1,
        ("popframe_sessions_open", (("listener", "tcp:110"), ("tls", "no"))): 0,
        ("popframe_sessions_open", (("listener", "ssl:995"), ("tls", "no"))): 1,
        ("popframe_logins_total", (("mechanism", "USER"), ("result", "ok"))): 1,
        ("popframe_logins_total", (("mechanism", "USER"), ("result", "failed"))): 1,
        ("popframe_messages_retrieved_total", (("command", "RETR"),)): 2,
        ("popframe_retrieved_bytes_total", (("command", "RETR"),)): octets,
        ("popframe_deletions_committed_total", ()): 1,
        ("popframe_retr_duration_seconds_count", ()): 2,
        ("popframe_login_duration_seconds_count", (("result", "ok"),)): 1,
        ("popframe_lock_conflicts_total", ()): 0,
        ("popframe_tls_certificate_expiry_timestamp_seconds",
         (("name", "pop.example.org"), ("path", "/etc/cert.pem"))): 1.9e9,
        ("popframe_worker_restarts_total", ()): 0,
    }
    for key, value in expected.items():
        assert page.get(key) == value, key


def test_a_raising_observer_is_logged_and_the_others_still_hear(events: list[dict[str, Any]]) -> None:
    class Broken(SessionObserver):
        def session_closed(self, record: SessionRecord) -> None:
            raise RuntimeError("observer bug")

    server = Server()
    closed = Closed()
    server.factory.set_observer(combine_observers([Broken(), closed]))
    protocol, _ = server.connect()
    protocol.dataReceived(b"QUIT\r\n")
    protocol.connectionLost(None)
    assert len(closed.records) == 1
    assert any("observer bug" in str(e.get("log_failure")) for e in events)


@pytest.mark.core
def test_observers_hear_only_what_they_override() -> None:
    observers = SessionObservers([LogoutLine(), MetricsRecorder()])
    assert len(observers._calls["session_closed"]) == 2
    assert len(observers._calls["message_sent"]) == 1
    assert observers._calls["tls_started"] == (observers.observers[1].tls_started,)
    assert type(combine_observers([])) is SessionObserver


def test_default_observer_costs_nothing_and_records_still_fill() -> None:
    clock = Clock()
    factory = POP3Factory(make_portal(MemoryStore({"alice": list(MESSAGES)}),
                                      MemoryChecker(USERS)),
                          ServerConfig(allow_plaintext_auth=True), clock)
    assert type(factory.observer) is SessionObserver
    protocol, _ = connect_transport(factory, peer=REMOTE)
    protocol.dataReceived(LOGIN + b"RETR 1\r\n")
    assert protocol.record.retrieved == 1 and protocol.record.listener == "-"


@pytest.mark.core
def test_session_observer_for_the_factory() -> None:
    observer = session_observer(MetricsRecorder())
    assert isinstance(observer, SessionObservers)
    assert [type(o) for o in observer.observers] == [LogoutLine, MetricsRecorder]


@pytest.mark.core
@pytest.mark.parametrize("description, name", [
    ("tcp:110:interface=127.0.0.1:backlog=1024", "tcp:110"),
    ("ssl:995:privateKey=/etc/k\\:ey.pem:certKey=/etc/c.pem", "ssl:995"),
    ("haproxy:tcp:110", "haproxy:tcp:110"),
    ("unix:/run/popframe/pop3.sock", "unix:/run/popframe/pop3.sock"),
    ("systemd:domain=INET:index=0", "systemd:index=0"),
])
def test_listener_names(description: str, name: str) -> None:
    assert listener_name(description) == name


def test_event_text_is_what_twisted_formats() -> None:
    from popframe.ops.logformat import event_text

    events: list[dict[str, Any]] = [
        {"log_format": "{login_text}", "login_text": "login ok user={user}"},
        {"log_format": "{n}", "n": 3},
        {"log_format": "{a}{b}", "a": "x", "b": "y"},
        {"log_format": "{missing}"},
        {"log_format": "{text!r}", "text": "quoted"},
        {"log_format": "no fields"},
        {},
    ]
    for event in events:
        assert event_text(event) == formatEvent(event)

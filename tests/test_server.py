"""The Twisted adapter, in memory: BufferedTransport (a StringTransport), iosim and a fake clock."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.internet.address import IPv4Address
from twisted.internet.defer import fail
from twisted.internet.task import Clock
from zope.interface import implementer

from popframe.protocol import Limits
from popframe.protocol.encoding import MessageEncoder, wire_size
from popframe.server import POP3Factory, ServerConfig, is_loopback
from popframe.testing import (
    BufferedTransport,
    MemoryChecker,
    MemoryStore,
    connect_in_memory,
    connect_transport,
    make_portal,
)

pytestmark = pytest.mark.adapter

ALICE = {"alice": "secret"}
MESSAGES = [
    b"From: a@example.org\nSubject: one\n\nfirst\n.dot line\n",
    b"From: b@example.org\r\nSubject: two\r\n\r\nsecond\r\n",
    b"Subject: three\n\nno final newline",
]
LOGIN = b"USER alice\r\nPASS secret\r\n"
TOTAL = sum(wire_size(m) for m in MESSAGES)


def make_store(messages: list[bytes] = MESSAGES) -> MemoryStore:
    return MemoryStore({"alice": [(f"uid{i}", m) for i, m in enumerate(messages, 1)]})


def wire(message: bytes) -> bytes:
    encoder = MessageEncoder()
    return encoder.feed(message) + encoder.finish()


def test_greeting_and_full_session() -> None:
    store = make_store()
    conn = connect_in_memory(store, MemoryChecker(ALICE))
    assert bytes(conn.client.received) == b"+OK popframe ready\r\n"
    assert conn.send(LOGIN) == (
        b"+OK send your password\r\n+OK maildrop has 3 messages (%d octets)\r\n"
        % TOTAL
    )
    for number, message in enumerate(MESSAGES, 1):
        assert conn.send(b"RETR %d\r\n" % number) == (
            b"+OK %d octets\r\n" % wire_size(message) + wire(message)
        )
    assert conn.send(b"TOP 1 0\r\n") == (
        b"+OK top of message follows\r\nFrom: a@example.org\r\nSubject: one\r\n\r\n.\r\n"
    )
    assert conn.send(b"DELE 2\r\nQUIT\r\n") == (
        b"+OK message 2 deleted\r\n+OK popframe signing off (2 messages left)\r\n"
    )
    assert conn.client.lost
    assert [uid for uid, _ in store.maildrops["alice"]] == ["uid1", "uid3"]


def test_dropped_connection_deletes_nothing_and_unlocks() -> None:
    store = make_store()
    conn = connect_in_memory(store, MemoryChecker(ALICE))
    conn.send(LOGIN + b"DELE 1\r\nDELE 2\r\n")
    conn.disconnect()
    assert len(store.maildrops["alice"]) == 3
    again = connect_in_memory(store, MemoryChecker(ALICE))
    assert again.send(LOGIN).endswith(b"+OK maildrop has 3 messages (%d octets)\r\n"
                                      % TOTAL)


def test_second_session_gets_in_use() -> None:
    store = make_store()
    first = connect_in_memory(store, MemoryChecker(ALICE))
    first.send(LOGIN)
    second = connect_in_memory(store, MemoryChecker(ALICE))
    assert second.send(LOGIN).split(b"\r\n")[1].startswith(b"-ERR [IN-USE] ")


def test_bad_password_gets_auth_code() -> None:
    conn = connect_in_memory(make_store(), MemoryChecker(ALICE))
    assert conn.send(b"USER alice\r\nPASS wrong\r\n") == (
        b"+OK send your password\r\n-ERR [AUTH] authentication failed\r\n"
    )


def test_unknown_user_gets_the_same_reply() -> None:
    conn = connect_in_memory(make_store(), MemoryChecker(ALICE))
    assert conn.send(b"USER mallory\r\nPASS wrong\r\n") == (
        b"+OK send your password\r\n-ERR [AUTH] authentication failed\r\n"
    )


@implementer(ICredentialsChecker)
class ExplodingChecker:
    credentialInterfaces = (IUsernamePassword,)

    def requestAvatarId(self, credentials: Any) -> Any:
        return fail(RuntimeError("database on fire at /secret/path"))


def test_unexpected_backend_error_is_sys_temp_without_details() -> None:
    conn = connect_in_memory(make_store(), ExplodingChecker())
    reply = conn.send(LOGIN)
    assert reply.endswith(b"-ERR [SYS/TEMP] temporary system failure, try again later\r\n")
    assert b"secret" not in reply and b"Traceback" not in reply


def test_pipelined_session_in_one_write() -> None:
    conn = connect_in_memory(make_store(), MemoryChecker(ALICE))
    out = conn.send(LOGIN + b"STAT\r\nRETR 2\r\nLIST 2\r\nUIDL 2\r\nQUIT\r\n")
    body = wire(MESSAGES[1])
    assert out == (
        b"+OK send your password\r\n"
        + b"+OK maildrop has 3 messages (%d octets)\r\n" % TOTAL
        + b"+OK 3 %d\r\n" % TOTAL
        + b"+OK %d octets\r\n" % wire_size(MESSAGES[1]) + body
        + b"+OK 2 %d\r\n" % wire_size(MESSAGES[1])
        + b"+OK 2 uid2\r\n"
        + b"+OK popframe signing off (3 messages left)\r\n"
    )


def connect(transport: BufferedTransport, store: MemoryStore | None = None,
            clock: Clock | None = None, **config: Any) -> Any:
    factory = POP3Factory(make_portal(store or make_store(), MemoryChecker(ALICE)),
                          ServerConfig(**config), clock or Clock())
    protocol, _ = connect_transport(factory, transport)
    return protocol


def test_retr_stops_when_the_client_stops_reading() -> None:
    big = b"Subject: big\n\n" + b"x" * 1000 + b"\n" * 5000
    message = big * 100  # ~5.5 MB
    transport = BufferedTransport(limit=100_000)
    protocol = connect(transport, make_store([message]), chunk_size=16384)
    protocol.dataReceived(LOGIN + b"RETR 1\r\n")
    first = transport.value()
    assert len(first) <= 100_000 + 2 * 16384 * 2  # one chunk can double (LF -> CRLF)
    protocol.dataReceived(b"NOOP\r\n")  # more input does not push more output
    assert transport.value() == first
    received = transport.drain()
    while transport.value():
        received += transport.drain()
    expected = wire(message)
    assert received.endswith(expected + b"+OK\r\n")


def test_pipelined_input_is_bounded_when_the_client_never_reads() -> None:
    transport = BufferedTransport(limit=10_000)
    protocol = connect(transport, limits=Limits(max_buffered=4096))
    protocol.dataReceived(LOGIN)
    for _ in range(200):
        protocol.dataReceived(b"LIST\r\n" * 100)
    assert transport.producerState == "paused"  # we stopped reading
    assert protocol.session.buffered < 200 * 600
    assert len(transport.value()) < 10_000 + 1000


def test_stls_discards_plaintext_pipelined_after_it() -> None:
    transport = BufferedTransport(limit=1 << 20)
    options = object()
    connect(transport, tls=options).dataReceived(b"STLS\r\nUSER evil\r\nPASS x\r\n")
    assert transport.value() == b"+OK popframe ready\r\n+OK begin TLS negotiation\r\n"
    assert transport.tls_options is options


def test_plaintext_auth_refused_from_remote_without_tls() -> None:
    remote = IPv4Address("TCP", "192.0.2.7", 4000)
    transport = BufferedTransport(limit=1 << 20, peer=remote)
    connect(transport, tls=object()).dataReceived(b"USER alice\r\n")
    assert transport.value().endswith(
        b"-ERR plaintext authentication is disabled, use STLS first\r\n"
    )
    transport = BufferedTransport(limit=1 << 20, peer=remote)
    connect(transport, allow_plaintext_auth=True).dataReceived(b"USER alice\r\n")
    assert transport.value().endswith(b"+OK send your password\r\n")


def test_idle_timeout_disconnects() -> None:
    clock = Clock()
    transport = BufferedTransport(limit=1 << 20)
    protocol = connect(transport, clock=clock, idle_timeout=600)
    clock.advance(599)
    timers = len(clock.getDelayedCalls())
    for _ in range(50):
        protocol.dataReceived(b"CAPA\r\n")
    assert len(clock.getDelayedCalls()) == timers  # activity re-arms no timer
    clock.advance(599)
    assert not transport.disconnecting
    clock.advance(1)
    assert transport.disconnecting and not transport.aborted  # closed cleanly
    assert transport.value().endswith(b"-ERR disconnected for inactivity\r\n")
    clock.advance(5)
    assert transport.aborted  # a client that does not read it is cut off


@pytest.mark.core
def test_loopback_detection() -> None:
    assert is_loopback(IPv4Address("TCP", "127.0.0.1", 1))
    assert is_loopback(IPv4Address("TCP", "127.8.9.1", 1))
    assert not is_loopback(IPv4Address("TCP", "10.0.0.1", 1))


def plain(authzid: str, authcid: str, password: str) -> bytes:
    import base64

    return b"AUTH PLAIN " + base64.b64encode(f"{authzid}\0{authcid}\0{password}".encode()) + b"\r\n"


def test_auth_plain_logs_in() -> None:
    conn = connect_in_memory(make_store(), MemoryChecker(ALICE))
    assert conn.send(b"CAPA\r\n").count(b"SASL PLAIN LOGIN\r\n") == 1
    assert conn.send(plain("", "alice", "secret")) == (
        b"+OK maildrop has 3 messages (%d octets)\r\n" % TOTAL
    )


def test_master_user_may_act_as_another_user() -> None:
    users = {"alice": "secret", "admin": "admin pw", "bob": "bob pw"}
    store = make_store()
    config = ServerConfig(master_users=frozenset({"admin"}))
    conn = connect_in_memory(store, MemoryChecker(users), config)
    assert conn.send(plain("alice", "admin", "admin pw")).startswith(b"+OK maildrop has 3 messages")
    # An ordinary user asking to be someone else is refused.
    other = connect_in_memory(store, MemoryChecker(users), config)
    assert other.send(plain("alice", "bob", "bob pw")) == b"-ERR [AUTH] authentication failed\r\n"
    # ... and a master user with a wrong password too.
    third = connect_in_memory(store, MemoryChecker(users), config)
    assert third.send(plain("bob", "admin", "wrong")) == b"-ERR [AUTH] authentication failed\r\n"


def test_loopback_haproxy_does_not_make_remote_clients_local() -> None:
    from twisted.protocols.haproxy._wrapper import HAProxyWrappingFactory

    factory = POP3Factory(make_portal(make_store(), MemoryChecker(ALICE)),
                          ServerConfig(tls=object()), Clock())
    wrapper, transport = connect_transport(HAProxyWrappingFactory(factory),
                                           peer=IPv4Address("TCP", "127.0.0.1", 4000))
    wrapper.dataReceived(b"PROXY TCP4 198.51.100.7 127.0.0.1 40000 110\r\nUSER alice\r\n")
    assert transport.value().endswith(
        b"-ERR plaintext authentication is disabled, use STLS first\r\n"
    )


@pytest.mark.core
def test_what_is_left_after_a_partial_send() -> None:
    from popframe.server.protocol import _after

    assert _after([b"+OK\r\n", b"body", b".\r\n"], 0) == [b"+OK\r\n", b"body", b".\r\n"]
    assert _after([b"+OK\r\n", b"body", b".\r\n"], 7) == [b"dy", b".\r\n"]
    assert _after([b"+OK\r\n", b"body", b".\r\n"], 9) == [b".\r\n"]
    assert _after([b"+OK\r\n", b"body", b".\r\n"], 12) == []

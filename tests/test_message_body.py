"""RETR from a store whose bodies are not local files: IMessageBody, read
one chunk at a time through Deferreds, with back-pressure."""

from __future__ import annotations

from typing import Any

import pytest
from test_server import LOGIN, BufferedTransport, connect, wire
from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from popframe.errors import TemporaryFailure
from popframe.interfaces import IMaildrop, IMessageBody, MessageList, UserSettings
from popframe.protocol.encoding import wire_form
from popframe.stores.base import LockedMaildrop
from popframe.stores.locking import MemoryLocker

pytestmark = pytest.mark.adapter

MESSAGE = b"Subject: remote\n\n" + b"".join(b"line %d\n" % i for i in range(3000))


@implementer(IMessageBody)
class ScriptedBody:
    """A body whose reads the test answers by hand."""

    def __init__(self) -> None:
        self.reads: list[tuple[int, Deferred[bytes]]] = []
        self.closed = 0

    def read(self, size: int) -> Deferred[bytes]:
        d: Deferred[bytes] = Deferred()
        self.reads.append((size, d))
        return d

    def close(self) -> None:
        self.closed += 1

    def outstanding(self) -> list[tuple[int, Deferred[bytes]]]:
        return [(size, d) for size, d in self.reads if not d.called]


@implementer(IMaildrop)
class RemoteMaildrop(LockedMaildrop):
    def __init__(self, store: RemoteStore, lock: Any) -> None:
        super().__init__(lock)
        self.store = store
        form = wire_form(MESSAGE)
        self._listing = MessageList(["r1"], [form.size], bytes([form.ready]))

    def listing(self) -> MessageList:
        return self._listing

    def open_message(self, uid: str) -> Deferred[IMessageBody]:
        self.check_open()
        body = ScriptedBody()
        self.store.bodies.append(body)
        return succeed(body)

    def apply_deletions(self, uids: list[str]) -> Deferred[None]:
        self.store.deleted += uids
        return succeed(None)


class RemoteStore:
    def __init__(self) -> None:
        self.bodies: list[ScriptedBody] = []
        self.deleted: list[str] = []
        self.settings: list[UserSettings | None] = []
        self.locker = MemoryLocker()

    def open(self, user: str, settings: UserSettings | None = None) -> Deferred[IMaildrop]:
        self.settings.append(settings)
        return self.locker.acquire(user).addCallback(lambda lock: RemoteMaildrop(self, lock))


def test_chunks_are_read_one_at_a_time_and_only_when_the_client_takes_them() -> None:
    store = RemoteStore()
    transport = BufferedTransport(limit=8192)
    protocol = connect(transport, store, chunk_size=4096)  # type: ignore[arg-type]
    protocol.dataReceived(LOGIN + b"RETR 1\r\nNOOP\r\n")
    [body] = store.bodies
    sent = pauses = 0
    received = b""
    while True:
        [(size, read)] = body.outstanding()  # never two reads at once
        assert size == 4096
        chunk, sent = MESSAGE[sent:sent + size], sent + size
        read.callback(chunk)
        if not chunk:
            break
        if protocol._write_paused:
            # The client's buffer is full: no read until it takes some.
            assert body.outstanding() == []
            pauses += 1
            received += transport.drain()
    received += transport.drain()
    assert pauses > 2
    head, _, rest = received.partition(b"+OK %d octets\r\n" % len(wire(MESSAGE)[:-3]))
    assert head.endswith(b"+OK maildrop has 1 messages (%d octets)\r\n" % len(wire(MESSAGE)[:-3]))
    assert rest == wire(MESSAGE) + b"+OK\r\n"
    assert body.closed == 1


def test_a_failed_read_hangs_up_and_deletes_nothing() -> None:
    store = RemoteStore()
    transport = BufferedTransport(limit=1 << 20)
    protocol = connect(transport, store)  # type: ignore[arg-type]
    protocol.dataReceived(LOGIN + b"DELE 1\r\nRETR 1\r\n")
    assert store.bodies == []  # DELE'd: RETR is refused before the store is asked
    protocol.dataReceived(b"RSET\r\nRETR 1\r\n")
    [body] = store.bodies
    [(_, read)] = body.outstanding()
    read.errback(TemporaryFailure("database went away"))
    assert transport.aborted
    protocol.connectionLost(None)
    assert body.closed == 1 and store.deleted == []
    # The lock was released: the next session opens the maildrop.
    assert store.locker.acquire("alice").called


def test_a_client_that_leaves_mid_message_closes_the_body_once() -> None:
    store = RemoteStore()
    transport = BufferedTransport(limit=1 << 20)
    protocol = connect(transport, store)  # type: ignore[arg-type]
    protocol.dataReceived(LOGIN + b"RETR 1\r\n")
    [body] = store.bodies
    [(size, read)] = body.outstanding()
    protocol.connectionLost(None)
    read.callback(MESSAGE[:size])  # the read finishes after the client left
    assert body.closed == 1 and body.outstanding() == []


def test_a_known_size_ends_without_a_last_read() -> None:
    """A wire-ready message's stored size is its listed size: the server
    stops after that many octets, with no extra read (a round trip to a
    database saved)."""
    crlf = MESSAGE.replace(b"\n", b"\r\n")
    store = RemoteStore()
    transport = BufferedTransport(limit=1 << 22)
    protocol = connect(transport, store, chunk_size=1 << 20)  # type: ignore[arg-type]
    protocol.dataReceived(LOGIN)
    maildrop = protocol._maildrop
    form = wire_form(crlf)
    assert form.ready
    maildrop._listing = MessageList(["r1"], [form.size], b"\x01")
    protocol.session._messages = maildrop._listing
    protocol.dataReceived(b"RETR 1\r\n")
    [body] = store.bodies
    [(_, read)] = body.outstanding()
    read.callback(crlf)
    assert body.outstanding() == [] and len(body.reads) == 1
    assert transport.value().endswith(crlf + b".\r\n")

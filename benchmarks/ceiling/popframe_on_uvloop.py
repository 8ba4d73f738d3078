#!/usr/bin/env python3
"""popframe's whole POP3 stack on uvloop's own sockets: a measured
prototype of "a different runtime for the connection loop" (issue 18).

For the benchmark only: nothing here is installed or imported by popframe.

    python benchmarks/ceiling/popframe_on_uvloop.py PORT WORKERS LOGFILE [--fast-retr] -- POP3-OPTIONS...

POP3-OPTIONS are ``twistd pop3``'s (``--store maildir:... --auth
passwd-file:...``), parsed by popframe's own ``Options`` into the same
``Settings``, ``Serving`` and ``POP3Factory`` a worker builds: the same
session core, login pipeline (checkers, throttle, limits), store, session
observers and login line.  What differs is only what is under
``POP3ServerProtocol``: instead of Twisted's reactor reading and writing
the socket (``tcp.Connection``, ``doRead``, the log context around each
read, its write buffer), uvloop's transports do, in C (libuv), and call the
protocol through the thin ``_Bridge`` below.  Twisted's asyncio reactor
runs on the same uvloop loop for what the factory schedules (timeouts,
threads).

WORKERS processes share one listening socket, bound before they fork (as
popframe's workers share the parent's), each logging to ``LOGFILE.N`` as
twistd's text log does (no parent relay: a difference in this prototype's
favour by the relay's ~4% of the server's CPU).

``--fast-retr``: the second prototype, what a short path for the drain's
hot loop would save.  A ``RETR n`` that arrives alone, in TRANSACTION
state with nothing outstanding, for a wire-ready Maildir message of at
most one chunk, is answered in ``_FastRetr.dataReceived`` with one open,
one read and one ``sendmsg`` (the session's deletion marks, the session
record and the observer's ``message_sent`` still kept), instead of
through the core's parser, its ``Retrieve`` event, the Deferred of
``open_message``, the body reader and the encoder.  Anything else takes
the usual path.  It skips nothing a client sees (the same octets are
sent, the load generator checks each message's size and CRC).
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from typing import Any

from launch import popframe_factory, serve_forked
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from popframe.protocol.session import SessionState
from popframe.server.protocol import POP3ServerProtocol


class _FastRetr(POP3ServerProtocol):
    """``--fast-retr``: RETR's short path (see the module's docstring)."""

    def dataReceived(self, data: bytes) -> None:
        if not self._retr_now(data):
            super().dataReceived(data)

    def _retr_now(self, data: bytes) -> bool:
        session = self.session
        if (session is None or len(data) > 16 or data[:5] not in (b"RETR ", b"retr ")
                or not data.endswith(b"\r\n") or not data[5:-2].isdigit()
                or session.state is not SessionState.TRANSACTION or session._pending is not None
                or session.buffered or self._closed or self._waiting or self._message is not None
                or self._rest is not None or session.config.workarounds
                or session.config.expire is not None):
            return False
        index = int(data[5:-2]) - 1
        messages = session._messages
        if not 0 <= index < len(messages) or index in session._deleted:
            return False
        info = messages[index]
        if not info.wire_ready or info.size > self.config.chunk_size:
            return False
        opened = self._maildrop._open_where_listed(info.uid)  # type: ignore[union-attr]
        if opened is None:
            return False
        try:
            body = opened.read(info.size)
        finally:
            opened.close()
        if len(body) != info.size:
            return False
        self._reset_timeout()
        self._write([b"+OK %d octets\r\n" % info.size, body, b".\r\n"])
        record = self.record
        assert record is not None
        record.retrieved += 1
        record.retrieved_octets += info.size
        self.observer.message_sent(record, "RETR", info.size, 0.0)
        return True


class _Transport:
    """What ``POP3ServerProtocol`` uses of a Twisted transport, on an
    asyncio (uvloop) transport."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._t = transport
        self._producer: Any = None
        host, port = transport.get_extra_info("peername")[:2]
        self._peer = IPv4Address("TCP", host, port)
        local = transport.get_extra_info("sockname")
        self._host = IPv4Address("TCP", local[0], local[1])

    def write(self, data: bytes) -> None:
        self._t.write(data)

    def writeSequence(self, data: list[bytes]) -> None:
        self._t.writelines(data)

    def loseConnection(self) -> None:
        self._t.close()  # after what is buffered is sent

    def abortConnection(self) -> None:
        self._t.abort()

    def getPeer(self) -> IPv4Address:
        return self._peer

    def getHost(self) -> IPv4Address:
        return self._host

    def setTcpNoDelay(self, enabled: bool) -> None:
        sock = self._t.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(enabled))

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self._producer = producer

    def unregisterProducer(self) -> None:
        self._producer = None

    def pauseProducing(self) -> None:
        self._t.pause_reading()

    def resumeProducing(self) -> None:
        self._t.resume_reading()

    def stopProducing(self) -> None:
        self.abortConnection()


class _Bridge(asyncio.Protocol):
    """uvloop's callbacks → the Twisted protocol's."""

    def __init__(self, factory: Any) -> None:
        self._factory = factory
        self._protocol: Any = None
        self._transport: _Transport | None = None

    def connection_made(self, transport: Any) -> None:
        self._transport = _Transport(transport)
        self._protocol = self._factory.buildProtocol(self._transport.getPeer())
        self._protocol.makeConnection(self._transport)

    def data_received(self, data: bytes) -> None:
        self._protocol.dataReceived(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._protocol.connectionLost(Failure(ConnectionDone()))

    def pause_writing(self) -> None:
        producer = self._transport._producer if self._transport else None
        if producer is not None:
            producer.pauseProducing()

    def resume_writing(self) -> None:
        producer = self._transport._producer if self._transport else None
        if producer is not None:
            producer.resumeProducing()


def serve(sock: socket.socket, log_path: str, fast_retr: bool, pop3_args: list[str]) -> None:
    """One worker: its own uvloop loop, Twisted's asyncio reactor on it,
    popframe's factory, the shared port."""
    import uvloop

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    from twisted.internet import asyncioreactor

    asyncioreactor.install(loop)
    from twisted.internet import reactor

    factory = popframe_factory(sock, log_path, pop3_args, reactor, _FastRetr if fast_retr else None)

    async def start() -> None:
        await loop.create_server(lambda: _Bridge(factory), sock=sock, backlog=1024)

    loop.run_until_complete(start())
    loop.add_signal_handler(signal.SIGTERM, reactor.stop)
    reactor.run(installSignalHandlers=False)


def main() -> None:
    args = sys.argv[1:]
    if "--" not in args or args.index("--") not in (3, 4):
        sys.exit(__doc__)
    port, workers, log_path = int(args[0]), int(args[1]), args[2]
    fast_retr = args[3] == "--fast-retr"
    pop3_args = args[args.index("--") + 1:]
    serve_forked(port, workers, lambda sock, n: serve(sock, f"{log_path}.{n}", fast_retr, pop3_args))


if __name__ == "__main__":
    main()

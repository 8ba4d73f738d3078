"""An in-memory transport that pushes back the way a socket does, for tests
of the adapter's flow control (a client that stops reading, a flood of
pipelined input) with ``buildProtocol`` and ``makeConnection`` alone."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IProtocol, IProtocolFactory
from twisted.internet.testing import StringTransport

__all__ = ["BufferedTransport", "connect_transport"]

#: The default peer: loopback, where USER/PASS is allowed without TLS.
_LOOPBACK_PEER = IPv4Address("TCP", "127.0.0.1", 4000)


class BufferedTransport(StringTransport):
    """A ``StringTransport`` that behaves like a TCP transport with a send
    buffer of ``limit`` octets: once more than that is unread, its
    producer is paused, and :meth:`drain` (the client reading) resumes it.
    ``limit=None``: never full.  It also records ``startTLS`` (no TLS is
    done) and ``abortConnection``, which a plain ``StringTransport`` lacks.
    """

    def __init__(self, limit: int | None = None, peer: object = None) -> None:
        super().__init__(peerAddress=peer if peer is not None else _LOOPBACK_PEER)
        self.limit = limit
        self.tls_options: object = None
        self.aborted = False

    def write(self, data: bytes) -> None:
        super().write(data)
        if self.limit is not None and self.producer is not None and len(self.value()) > self.limit:
            self.producer.pauseProducing()

    def drain(self) -> bytes:
        """Take everything written so far, as a client reading it would,
        and resume the producer."""
        data = self.value()
        self.clear()
        if self.producer is not None:
            self.producer.resumeProducing()
        return data

    def startTLS(self, options: object) -> None:
        self.tls_options = options

    def abortConnection(self) -> None:
        self.aborted = True
        self.loseConnection()


def connect_transport(factory: IProtocolFactory, transport: BufferedTransport | None = None,
                      peer: object = None) -> tuple[IProtocol, BufferedTransport]:
    """A protocol of ``factory`` connected to ``transport`` (by default a
    new :class:`BufferedTransport` from ``peer``, loopback if None): the
    greeting is in ``transport.value()``, and the test calls
    ``protocol.dataReceived`` itself."""
    transport = transport if transport is not None else BufferedTransport(peer=peer)
    protocol = factory.buildProtocol(transport.getPeer())
    assert protocol is not None, f"{factory!r} refused the connection"
    protocol.makeConnection(transport)
    return protocol, transport

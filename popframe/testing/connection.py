"""The real server protocol against a client in memory (``twisted.test.iosim``):
no sockets, no reactor, a fake clock, so a test of a whole POP3 exchange
runs in microseconds and decides its own timing.

    conn = connect_in_memory(MemoryStore({"alice": [b"Subject: hi\\n\\nhello\\n"]}),
                             MemoryChecker({"alice": "secret"}))
    conn.send(b"USER alice\\r\\nPASS secret\\r\\nRETR 1\\r\\n")
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.portal import Portal
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import ISSLTransport, ITransport
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.test import iosim
from zope.interface import alsoProvides

from popframe.interfaces import IMaildropStore
from popframe.realm import MaildropRealm
from popframe.server import POP3Factory, POP3ServerProtocol, ServerConfig

__all__ = ["InMemoryConnection", "RecordingClient", "connect_in_memory", "make_portal"]


def make_portal(store: IMaildropStore, checker: ICredentialsChecker) -> Portal:
    """The portal ``twistd pop3`` builds: ``store``'s maildrops behind
    ``checker``, for a test that makes its own factory."""
    return Portal(MaildropRealm(store), [checker])


class RecordingClient(Protocol):
    """The client side: keeps everything the server sent, so a test reads
    the exact octets, and whether the server hung up."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.lost = False

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: object = None) -> None:
        self.lost = True


@dataclass
class InMemoryConnection:
    """One connection made by :func:`connect_in_memory`: the two ends, the
    pump between them, and the clock the server's timers run on."""

    client: RecordingClient
    server: POP3ServerProtocol
    pump: iosim.IOPump
    clock: Clock

    def send(self, data: bytes) -> bytes:
        """Send ``data``, deliver everything, return what the server answered."""
        start = len(self.client.received)
        self._client_transport().write(data)
        self.pump.flush()
        return bytes(self.client.received[start:])

    def disconnect(self) -> None:
        """Drop the connection from the client side, as a crash would."""
        self._client_transport().loseConnection()
        self.pump.flush()

    def _client_transport(self) -> ITransport:
        transport = self.client.transport
        assert transport is not None, "the client is not connected"
        return transport


def connect_in_memory(
    store: IMaildropStore,
    checker: ICredentialsChecker,
    config: ServerConfig | None = None,
    peer: object = None,
    tls_handle: object = None,
) -> InMemoryConnection:
    """Connect a :class:`RecordingClient` to a real server protocol.  The
    greeting is already in ``client.received``.  ``peer`` defaults to a
    loopback address (so USER/PASS is allowed without TLS).
    ``tls_handle``: the connection is as if over TLS (the server's
    transport provides ``ISSLTransport``), and its ``getHandle()`` is
    this: a pyOpenSSL ``Connection``, or a stand-in with
    ``get_peer_certificate(as_cryptography=True)`` for a client
    certificate (SASL EXTERNAL)."""
    clock = Clock()
    factory = POP3Factory(make_portal(store, checker), config, clock)
    server = factory.buildProtocol(None)
    client = RecordingClient()
    peer = peer or IPv4Address("TCP", "127.0.0.1", 50000)
    host = IPv4Address("TCP", "127.0.0.1", 110)
    server_transport = iosim.FakeTransport(
        server, isServer=True, hostAddress=host, peerAddress=peer)
    if tls_handle is not None:
        alsoProvides(server_transport, ISSLTransport)
        server_transport.getHandle = lambda: tls_handle  # type: ignore[attr-defined]
    client_transport = iosim.FakeTransport(
        client, isServer=False, hostAddress=peer, peerAddress=host)
    pump = iosim.connect(server, server_transport, client, client_transport, clock=clock)
    return InMemoryConnection(client, server, pump, clock)

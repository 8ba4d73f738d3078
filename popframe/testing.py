"""Public test helpers for people who write popframe backends and tests
(in the spirit of ``treq.testing``): an in-memory store and checker, and a
client connected to the real server protocol in memory, no sockets.

    conn = connect_in_memory(MemoryStore({"alice": [b"Subject: hi\\n\\nhello\\n"]}),
                             MemoryChecker({"alice": "secret"}))
    conn.send(b"USER alice\\r\\nPASS secret\\r\\nRETR 1\\r\\n")
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.test import iosim
from zope.interface import implementer

from popframe.interfaces import IMaildropStore
from popframe.realm import MaildropRealm
from popframe.server import POP3Factory, POP3ServerProtocol, ServerConfig
from popframe.stores.memory import MemoryStore

__all__ = [
    "InMemoryConnection",
    "MemoryChecker",
    "MemoryStore",
    "connect_in_memory",
    "make_portal",
]


@implementer(ICredentialsChecker)
class MemoryChecker:
    """Plaintext users in a dict; for tests only."""

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users

    def requestAvatarId(self, credentials: IUsernamePassword) -> Deferred:
        username = credentials.username
        name = username.decode("utf-8", "replace") if isinstance(username, bytes) else username
        secret = self.users.get(name)
        if secret is not None and credentials.checkPassword(secret.encode("utf-8")):
            return succeed(name.encode("utf-8"))
        return fail(UnauthorizedLogin())


def make_portal(store: IMaildropStore, checker: ICredentialsChecker) -> Portal:
    return Portal(MaildropRealm(store), [checker])


class RecordingClient(Protocol):
    """The client side: keeps everything the server sent."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.lost = False

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: object = None) -> None:
        self.lost = True


@dataclass
class InMemoryConnection:
    client: RecordingClient
    server: POP3ServerProtocol
    pump: iosim.IOPump
    clock: Clock

    def send(self, data: bytes) -> bytes:
        """Send ``data``, deliver everything, return what the server answered."""
        start = len(self.client.received)
        self.client.transport.write(data)
        self.pump.flush()
        return bytes(self.client.received[start:])

    def disconnect(self) -> None:
        """Drop the connection from the client side, as a crash would."""
        self.client.transport.loseConnection()
        self.pump.flush()


def connect_in_memory(
    store: IMaildropStore,
    checker: ICredentialsChecker,
    config: ServerConfig | None = None,
    peer: object = None,
) -> InMemoryConnection:
    """Connect a :class:`RecordingClient` to a real server protocol.  The
    greeting is already in ``client.received``.  ``peer`` defaults to a
    loopback address (so USER/PASS is allowed without TLS)."""
    clock = Clock()
    factory = POP3Factory(make_portal(store, checker), config, clock)
    server = factory.buildProtocol(None)
    client = RecordingClient()
    peer = peer or IPv4Address("TCP", "127.0.0.1", 50000)
    host = IPv4Address("TCP", "127.0.0.1", 110)
    server_transport = iosim.FakeTransport(server, isServer=True, hostAddress=host, peerAddress=peer)
    client_transport = iosim.FakeTransport(client, isServer=False, hostAddress=peer, peerAddress=host)
    pump = iosim.connect(server, server_transport, client, client_transport, clock=clock)
    return InMemoryConnection(client, server, pump, clock)

"""Public test helpers for people who write popframe backends and tests
(in the spirit of ``treq.testing``): an in-memory store and checker, a
client connected to the real server protocol in memory, no sockets, and
:func:`start_server` for a real ``twistd pop3`` process on loopback.

    conn = connect_in_memory(MemoryStore({"alice": [b"Subject: hi\\n\\nhello\\n"]}),
                             MemoryChecker({"alice": "secret"}))
    conn.send(b"USER alice\\r\\nPASS secret\\r\\nRETR 1\\r\\n")
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

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
    "TWISTD",
    "InMemoryConnection",
    "MemoryChecker",
    "MemoryStore",
    "ServerProcess",
    "connect_in_memory",
    "make_portal",
    "start_server",
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


# -- a real server process ------------------------------------------------------

#: twistd from the interpreter running this code (whatever PATH says).
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
_LISTENING = re.compile(rb"POP3Factory(?: \(TLS\))? starting on (\d+)")


@dataclass
class ServerProcess:
    """A ``twistd pop3`` process; its output goes to ``log`` as it comes."""

    process: subprocess.Popen[bytes]
    ports: list[int]
    log: Path
    _drain: threading.Thread | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def children(self) -> list[int]:
        """The pids of this process's children (its workers), from /proc."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # exited meanwhile
            if int(stat.rsplit(")", 1)[1].split()[1]) == self.pid:
                found.append(int(entry.name))
        return sorted(found)

    @property
    def port(self) -> int:
        """The first listener."""
        return self.ports[0]

    @property
    def tls_port(self) -> int:
        """The second listener (implicit TLS, by convention)."""
        return self.ports[1]

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s; the log is complete after."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._drain is not None:
            self._drain.join(10)


def start_server(
    args: list[str], cwd: Path, listeners: int = 1, startup_seconds: float = 30
) -> ServerProcess:
    """Run ``twistd -n pop3 ARGS`` in ``cwd`` and return once ``listeners``
    ports are open (read from its log, so no guessing at timing).  The log
    is ``cwd/twistd.log``; raises ``RuntimeError`` with it if the server
    does not start."""
    log = Path(cwd) / "twistd.log"
    command = [*TWISTD, "-n", "--pidfile=", "--logfile=-", "pop3", *args]
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert process.stdout is not None
    stdout = process.stdout
    sink = open(log, "wb")  # noqa: SIM115  (closed by the drain thread)
    ports: list[int] = []
    deadline = time.monotonic() + startup_seconds
    while len(ports) < listeners:
        line = stdout.readline()
        if not line or time.monotonic() > deadline:
            process.kill()
            process.wait()
            sink.close()
            raise RuntimeError(f"server did not start: {log.read_text(errors='replace')}")
        sink.write(line)
        sink.flush()
        match = _LISTENING.search(line)
        if match:
            ports.append(int(match.group(1)))

    def drain() -> None:  # so the server never blocks on a full pipe
        with sink:
            for chunk in iter(lambda: stdout.read1(65536), b""):
                sink.write(chunk)
                sink.flush()

    thread = threading.Thread(target=drain, name="twistd-log", daemon=True)
    thread.start()
    return ServerProcess(process, ports, log, thread)

"""The factory every listener shares: one protocol per connection, the
login policy, the connection counts behind the limits, and the observer
its sessions report to."""

from __future__ import annotations

from twisted.cred.portal import Portal
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory

from popframe.auth.credentials import IVerifiedLogin, VerifiedLoginChecker, serviceable
from popframe.interfaces.observers import ISessionObserver, SessionObserver
from popframe.server.config import ServerConfig
from popframe.server.limits import ConnectionCount, UserSessions, count_key, uncount_key
from popframe.server.login import Logins
from popframe.server.protocol import POP3ServerProtocol

__all__ = ["POP3Factory", "endpoint_words", "listener_name"]


class POP3Factory(Factory[POP3ServerProtocol]):
    """Builds one :class:`POP3ServerProtocol` per connection."""

    def __init__(self, portal: Portal, config: ServerConfig | None = None,
                 clock: IReactorTime | None = None) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        assert clock is not None
        self.portal = portal
        self.config = config or ServerConfig()
        self.clock = clock
        if IVerifiedLogin not in portal.checkers:
            portal.registerChecker(VerifiedLoginChecker())
        # The mechanisms (and "USER") the checkers can serve.
        self.mechanisms = serviceable(portal, ("USER", *self.config.mechanisms))
        self.logins = Logins(portal, self.config, clock)
        # Open connections per client address (throttle.address_key), for
        # ServerConfig.max_connections_per_ip.
        self.connections_from: dict[str, int] = {}
        # Open connections to the server (ServerConfig.max_connections): a
        # worker gets a SharedConnectionCount instead.
        self.connection_count: ConnectionCount = ConnectionCount()
        self.user_sessions = UserSessions()
        self.observer: ISessionObserver = SessionObserver()
        # Set when the last listener stops: sessions lost from then on
        # ended because the server is shutting down.
        self.stopping = False

    def set_observer(self, observer: ISessionObserver) -> None:
        """Who hears about this factory's sessions (see
        :mod:`popframe.interfaces.observers`)."""
        self.observer = observer
        throttle = self.config.throttle
        if throttle is not None:
            from popframe.server.failures import backend_failure_kind

            throttle.store_failed = lambda failure: observer.backend_failed(
                "throttle", backend_failure_kind(failure))

    def buildProtocol(self, addr: object) -> POP3ServerProtocol:
        return POP3ServerProtocol(self)

    def startFactory(self) -> None:
        self.stopping = False

    def stopFactory(self) -> None:
        self.stopping = True

    def count_connection(self, address: str, limit: int) -> bool:
        """Count one more connection from ``address``; False (and not
        counted) when it already has ``limit``."""
        return count_key(self.connections_from, address, limit)

    def forget_connection(self, address: str) -> None:
        uncount_key(self.connections_from, address)


def endpoint_words(description: str) -> list[str]:
    """A Twisted endpoint string split at its unescaped colons, escapes
    removed (``ssl:995:privateKey=a\\:b.pem`` is ``ssl``, ``995``,
    ``privateKey=a:b.pem``)."""
    words = []
    word = ""
    escaped = False
    for char in description:
        if escaped:
            word += char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            words.append(word)
            word = ""
        else:
            word += char
    words.append(word)
    return words


def listener_name(description: str) -> str:
    """A short name for the listener a Twisted endpoint string describes:
    its type and port or path, without options (``ssl:995:privateKey=...``
    is ``ssl:995``; ``haproxy:tcp:110`` stays whole)."""
    kept = [w for w in endpoint_words(description)
            if "=" not in w or w.startswith(("index=", "name=", "port="))]
    depth = 3 if kept[:1] == ["haproxy"] else 2
    return ":".join(kept[:depth])

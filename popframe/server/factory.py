"""The factory every listener shares: one protocol per connection, the
login policy, and the per-address connection counts."""

from __future__ import annotations

from twisted.cred.portal import Portal
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory

from popframe.auth.credentials import IVerifiedLogin, VerifiedLoginChecker, serviceable
from popframe.server.config import ServerConfig
from popframe.server.login import Logins
from popframe.server.protocol import POP3ServerProtocol

__all__ = ["POP3Factory"]


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

    def buildProtocol(self, addr: object) -> POP3ServerProtocol:
        return POP3ServerProtocol(self)

    def count_connection(self, address: str, limit: int) -> bool:
        """Count one more connection from ``address``; False (and not
        counted) when it already has ``limit``."""
        count = self.connections_from.get(address, 0)
        if count >= limit:
            return False
        self.connections_from[address] = count + 1
        return True

    def forget_connection(self, address: str) -> None:
        count = self.connections_from.get(address, 0) - 1
        if count > 0:
            self.connections_from[address] = count
        else:
            self.connections_from.pop(address, None)

"""Settings → the POP3 factory: portal, realm, store, server config.

Its own module because two places build factories from the same
settings: ``popframe.service`` for one process, and each ``--workers``
process (``popframe.workers.child``), which must not import the service
that spawned it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.cred.portal import Portal

from popframe.realm import MaildropRealm
from popframe.server import POP3Factory, ServerConfig

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from popframe.settings import Settings

__all__ = ["make_factory", "server_config"]


def server_config(settings: Settings) -> ServerConfig:
    """What every connection of a factory shares."""
    return ServerConfig(
        tls=settings.tls,
        idle_timeout=settings.idle_timeout,
        preauth_timeout=settings.preauth_timeout,
        max_connections_per_ip=settings.max_connections_per_ip,
        allow_plaintext_auth=settings.allow_plaintext_auth,
        mechanisms=settings.mechanisms,
        master_users=settings.master_users,
        hostname=settings.hostname,
        throttle=settings.throttle,
        login_delay=settings.login_delay,
    )


def make_factory(settings: Settings, clock: IReactorTime | None = None) -> POP3Factory:
    """The POP3 factory ``settings`` describe (shared by every listener of
    a process)."""
    portal = Portal(MaildropRealm(settings.store), settings.checkers)
    return POP3Factory(portal, server_config(settings), clock)

"""Settings → the factories: the POP3 factory (portal, realm, store, server
config) and the LMTP factory (the store's delivery side).

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

    from popframe.delivery.lmtp import LMTPFactory
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


def make_lmtp_factory(settings: Settings, clock: IReactorTime | None = None) -> LMTPFactory:
    """The LMTP factory of ``--lmtp`` (shared by every LMTP listener of a
    process): recipients are checked against the checkers that can look
    users up, and delivered into the store."""
    from twisted.logger import Logger

    from popframe.delivery import DeliveryAgent
    from popframe.delivery.lmtp import LMTPConfig, LMTPFactory
    from popframe.interfaces import IUserSettings

    config = settings.lmtp_config if settings.lmtp_config is not None else LMTPConfig()
    sources = [c for c in dict.fromkeys(settings.checkers) if IUserSettings.providedBy(c)]
    if not sources:
        Logger(namespace="popframe.delivery.lmtp").warn(
            "--lmtp: no --auth checker can look users up, so every recipient is accepted")
    agent = DeliveryAgent(settings.store, sources, config.recipients)
    return LMTPFactory(agent, config, clock)

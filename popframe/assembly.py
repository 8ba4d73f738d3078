"""Settings → the factories: the POP3 factory (portal, realm, store, server
config) and the LMTP factory (the store's delivery side).

Its own module because two places build factories from the same
settings: ``popframe.service`` for one process, and each ``--workers``
process (``popframe.workers.child``), which must not import the service
that spawned it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.cred.portal import Portal

from popframe.realm import MaildropRealm
from popframe.server import POP3Factory, ServerConfig
from popframe.throttle import TrustedNetworks

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from popframe.delivery.lmtp import LMTPFactory
    from popframe.ops.metrics import MetricsRecorder
    from popframe.settings import Settings

__all__ = [
    "CONFIGURED_ATTRIBUTES",
    "make_factory",
    "make_lmtp_factory",
    "reconfigure",
    "reload_settings",
    "server_config",
]

#: What a factory derives from its settings, by factory type: a reload
#: replaces these on the running factory, for the connections that come
#: next (a connection copies them when it starts, so sessions in progress
#: keep theirs).  Everything else on a factory is live state that must
#: survive a reload (per-address connection counts).
CONFIGURED_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "POP3Factory": ("portal", "config", "mechanisms", "logins"),
    "LMTPFactory": ("agent", "config"),
}


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
        expire=settings.expire,
        workarounds=settings.workarounds,
        max_connections=settings.max_connections,
        max_sessions_per_user=settings.max_sessions_per_user,
        trusted_networks=settings.trusted_networks or TrustedNetworks(),
    )


def make_factory(settings: Settings, clock: IReactorTime | None = None,
                 metrics: MetricsRecorder | None = None) -> POP3Factory:
    """The POP3 factory ``settings`` describe (shared by every listener of
    a process); its sessions end in a logout line and, with ``metrics``,
    are counted there."""
    from popframe.ops import session_observer

    portal = Portal(MaildropRealm(settings.store), settings.checkers)
    factory = POP3Factory(portal, server_config(settings), clock)
    factory.set_observer(session_observer(metrics))
    return factory


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


def reconfigure(running: Any, fresh: Any) -> None:
    """Give the ``running`` factory the configuration of ``fresh``, a
    factory just made from new settings (see :data:`CONFIGURED_ATTRIBUTES`)."""
    for name in CONFIGURED_ATTRIBUTES[type(running).__name__]:
        setattr(running, name, getattr(fresh, name))
    set_observer = getattr(running, "set_observer", None)
    if set_observer is not None:  # the new throttle reports to the same observer
        set_observer(running.observer)


def reload_settings(current: Settings) -> Settings:
    """The settings the same arguments give now (the ``--config`` file, the
    certificates and the files they name read again), or a
    ``usage.UsageError`` saying why not.  The running throttle store is
    kept when it is still the one asked for."""
    from twisted.python import usage

    from popframe.options import Options
    from popframe.settings import Settings

    if current.argv is None:
        raise usage.UsageError("these settings were not made from a command line")
    options = Options()
    options.previous = current
    options.parseOptions(list(current.argv))
    return Settings.from_options(options)

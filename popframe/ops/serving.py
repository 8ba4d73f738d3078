"""What one serving process runs, and how it changes and stops: the same
in ``--workers 1`` and in each worker.

- The factories are made once; a reload (SIGHUP) makes new
  :class:`~popframe.settings.Settings` from the same arguments (the
  ``--config`` file, certificates, passwd-file read again) and gives the
  running factories the new portal, checkers, store and limits
  (:func:`popframe.assembly.reconfigure`).  A connection takes its
  factory's configuration when it starts, so sessions in progress keep
  theirs; listeners keep their sockets.
- ``ssl:`` listeners get a :class:`SwitchableTLS` in place of their TLS
  options, so the next handshake after a reload uses the new certificate.
- A reload that fails (a mismatched key, a missing file, a bad value)
  changes nothing and logs why.
- A stop (SIGTERM) stops the listeners, then lets the sessions in
  progress finish for ``--shutdown-grace`` seconds
  (:class:`~popframe.ops.connections.Connections`).
"""

from __future__ import annotations

import signal
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from OpenSSL import SSL
from twisted.internet import defer
from twisted.internet.interfaces import IOpenSSLContextFactory, IOpenSSLServerConnectionCreator
from twisted.logger import Logger
from twisted.python import usage
from zope.interface import implementer

from popframe.assembly import make_factory, make_lmtp_factory, reconfigure, reload_settings
from popframe.config import ConfigurationError
from popframe.config.endpoints import parse_server_endpoint, without_implicit_tls
from popframe.ops.connections import Connections, TrackingFactory
from popframe.server.factory import listener_name
from popframe.settings import Settings
from popframe.twisted_internals import replace_tls_options, tls_options, wrapped_endpoint

if TYPE_CHECKING:
    from popframe.ops.metrics import MetricsRecorder

__all__ = ["RESTART_ONLY", "Serving", "SwitchableTLS", "install_signal_handlers"]

log = Logger(namespace="popframe.ops")

#: Settings a reload cannot change (the sockets and processes stay).
RESTART_ONLY = ("listen", "lmtp", "workers", "metrics", "expire-sweep")


@implementer(IOpenSSLServerConnectionCreator, IOpenSSLContextFactory)
class SwitchableTLS:
    """An ``ssl:`` listener's TLS options: every handshake asks for the
    context of the options it holds now (``current``), which a reload
    replaces."""

    def __init__(self, current: Any) -> None:
        self.current = current

    def getContext(self) -> Any:
        return self.current.getContext()

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        return SSL.Connection(self.current.getContext(), None)


def _tls_endpoint(endpoint: Any) -> Any:
    """The endpoint that holds TLS options, under any wrappers; or None."""
    while endpoint is not None:
        if tls_options(endpoint) is not None:
            return endpoint
        endpoint = wrapped_endpoint(endpoint)
    return None


class Serving:
    """One process's factories and listeners' TLS, reloadable and
    stoppable."""

    def __init__(self, settings: Settings, reactor: Any,
                 metrics: MetricsRecorder | None = None) -> None:
        self.settings = settings
        self.reactor = reactor
        self.connections = Connections(reactor)
        # The POP3 factory's sessions are counted in ``metrics`` (--metrics),
        # across reloads: the observer is the factory's live state.
        self.factories: dict[str, Any] = {"pop3": make_factory(settings, reactor, metrics)}
        if settings.lmtp:
            self.factories["lmtp"] = make_lmtp_factory(settings, reactor)
        self._tracking: dict[tuple[str, str | None], TrackingFactory] = {}
        self._switches: list[tuple[str, str, SwitchableTLS]] = []
        # implicit-tls: listeners serve the --tls-cert certificate.
        self._implicit: list[SwitchableTLS] = []

    def factory(self, kind: str, description: str | None = None) -> TrackingFactory:
        """What a ``kind`` listener (``pop3``, ``lmtp``) listens with; a
        POP3 listener's ``description`` names its sessions' listener (in
        the metrics and the logout line)."""
        named = description if kind == "pop3" else None
        key = (kind, named)
        if key not in self._tracking:
            name = listener_name(named) if named is not None else None
            self._tracking[key] = TrackingFactory(self.factories[kind], self.connections, name)
        return self._tracking[key]

    def endpoint(self, reactor: Any, description: str, key: str = "--listen") -> Any:
        """The endpoint ``description`` names, parsed against ``reactor``
        (the reactor, or a worker's stand-in), its TLS made reloadable."""
        implicit = SwitchableTLS(self.settings.tls) if self.settings.tls is not None else None
        endpoint = parse_server_endpoint(reactor, description, key, implicit)
        if implicit is not None and without_implicit_tls(description) != description:
            self._implicit.append(implicit)
        holder = _tls_endpoint(endpoint)
        if holder is not None:
            switch = SwitchableTLS(tls_options(holder))
            replace_tls_options(holder, switch)
            self._switches.append((description, key, switch))
        return endpoint

    # -- SIGHUP ------------------------------------------------------------------

    def reload(self) -> bool:
        """Make new settings and serve new connections with them; False
        (and nothing changed) when they do not check out."""
        old = self.settings
        try:
            new = reload_settings(old)
            certificates = [(switch, self._tls_now(description, key))
                            for description, key, switch in self._switches]
            factories: dict[str, Any] = {"pop3": make_factory(new, self.reactor)}
            if "lmtp" in self.factories:
                factories["lmtp"] = make_lmtp_factory(new, self.reactor)
        except (usage.UsageError, ConfigurationError) as error:
            log.error("reload failed, the running settings stay: {error}", error=error,
                      popframe_reload=False)
            return False
        except Exception:
            log.failure("reload failed, the running settings stay", popframe_reload=False)
            return False
        for name in RESTART_ONLY:
            attribute = name.replace("-", "_")
            if getattr(new, attribute) != getattr(old, attribute):
                log.warn("reload: {name} changed, which takes a restart; still serving "
                         "{value!r}", name=name, value=getattr(old, attribute))
        for kind, fresh in factories.items():
            reconfigure(self.factories[kind], fresh)
        for switch, options in certificates:
            switch.current = options
        if new.tls is not None:
            for switch in self._implicit:
                switch.current = new.tls
        self.settings = replace(new, listen=old.listen, lmtp=old.lmtp, workers=old.workers)
        log.info("reloaded: new connections get the new settings ({count} sessions in "
                 "progress keep theirs)", count=len(self.connections.open),
                 popframe_reload=True)
        return True

    def _tls_now(self, description: str, key: str) -> Any:
        """The TLS options ``description`` gives now (its files read again)."""
        endpoint = parse_server_endpoint(self.reactor, description, key)
        return tls_options(_tls_endpoint(endpoint))

    # -- SIGTERM -----------------------------------------------------------------

    def drain(self) -> defer.Deferred[None]:
        """Once the listeners stopped: the sessions in progress finish or
        are closed after ``--shutdown-grace``."""
        return self.connections.drain(self.settings.shutdown_grace)


def install_signal_handlers(reactor: Any, on_hup: Any, on_stop: Any) -> None:
    """SIGHUP calls ``on_hup()``; SIGTERM and SIGINT call ``on_stop(first)``
    (``first``: not stopping yet), each on the reactor thread.  Call once
    the reactor runs: Twisted installs its own SIGTERM handler as it
    starts, which stops with the signal as the exit status; a stop here
    is an orderly exit, status 0."""
    stopping: list[bool] = []

    def stop(signum: int, frame: object) -> None:
        first = not stopping
        stopping.append(True)
        reactor.callFromThread(on_stop, first)

    signal.signal(signal.SIGHUP, lambda signum, frame: reactor.callFromThread(on_hup))
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

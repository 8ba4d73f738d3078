"""Turns settings into a running service: one process's listeners, or a
pool of worker processes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from popframe.config import ConfigurationError
from popframe.config.endpoints import listen_problem
from popframe.ops import sdnotify
from popframe.ops.serving import Serving, install_signal_handlers
from popframe.settings import Settings
from popframe.twisted_internals import (
    dispatch_directly,
    faster_text_logs,
    raise_listen_errors_synchronously,
)

__all__ = ["Listener", "ServingService", "add_autoconfig_service", "make_listeners",
           "make_service"]

log = Logger(namespace="popframe.service")


class Listener(StreamServerEndpointService):
    """One ``--listen`` or ``--lmtp`` endpoint; a port it cannot bind stops
    start-up with one line naming the option and the endpoint."""

    def __init__(self, endpoint: Any, factory: Any, key: str, description: str) -> None:
        super().__init__(_Recording(endpoint, self), factory)
        self.key = key
        self.description = description
        #: The port it is bound to (None: not yet, or not TCP): ``--autoconfig``.
        self.port: int | None = None
        raise_listen_errors_synchronously(self)

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except CannotListenError as error:
            raise SystemExit(f"popframe: {self.key}: {self.description!r}: cannot listen: "
                             f"{listen_problem(error)}") from None


class _Recording:
    """An endpoint that tells its listener the port it bound."""

    def __init__(self, endpoint: Any, listener: Listener) -> None:
        self.endpoint = endpoint
        self.listener = listener

    def listen(self, factory: Any) -> defer.Deferred[Any]:
        def bound(port: Any) -> Any:
            self.listener.port = getattr(port.getHost(), "port", None)
            return port

        listening: defer.Deferred[Any] = self.endpoint.listen(factory)
        return listening.addCallback(bound)


class ServingService(MultiService):
    """``--workers 1``: the listeners of one process, which SIGHUP
    reloads and SIGTERM stops gracefully (see :mod:`popframe.ops.serving`)."""

    def __init__(self, serving: Serving, reactor: Any) -> None:
        super().__init__()
        self.serving = serving
        self.reactor = reactor

    def startService(self) -> None:
        super().startService()
        self.reactor.callWhenRunning(self._running)

    def _running(self) -> None:
        install_signal_handlers(self.reactor, self.reload, self._stop)
        faster_text_logs()  # twistd's text log, the same lines for less CPU (issue 18)
        dispatch_directly(self.reactor)  # no legacy log context per ready descriptor
        sdnotify.ready(f"serving {len(self.services)} listeners")

    def reload(self) -> None:
        sdnotify.reloading()
        self.serving.reload()
        sdnotify.ready(f"serving {len(self.services)} listeners")

    def _stop(self, first: bool) -> None:
        if first:
            self.reactor.stop()
        else:  # a second signal: do not wait for the grace
            self.serving.connections.close_all()

    def stopService(self) -> defer.Deferred[None]:
        sdnotify.stopping()
        stopped = defer.maybeDeferred(super().stopService)  # the listeners stop accepting
        stopped.addBoth(lambda _: self.serving.drain())
        return stopped


def make_listeners(settings: Settings, reactor: Any) -> ServingService:
    """One process serving every ``--listen`` and ``--lmtp`` endpoint
    (``--workers 1``), and ``--metrics``."""
    recorder = None
    if settings.metrics:
        from popframe.ops import MetricsRecorder

        recorder = MetricsRecorder()
    serving = Serving(settings, reactor, recorder)
    service = ServingService(serving, reactor)
    pop3: list[Listener] = []
    for kind, key, descriptions in (("pop3", "--listen", settings.listen),
                                    ("lmtp", "--lmtp", settings.lmtp)):
        for description in descriptions:
            endpoint = serving.endpoint(reactor, description, key)
            listener = Listener(endpoint, serving.factory(kind, description), key, description)
            listener.setServiceParent(service)
            if kind == "pop3":
                pop3.append(listener)
    if recorder is not None:
        from popframe.ops.exposition import LocalMetrics

        add_metrics_service(service, settings, reactor, LocalMetrics(recorder))
    if settings.autoconfig is not None:
        add_autoconfig_service(service, settings, reactor,
                               lambda: {listener.description: listener.port for listener in pop3})
    return service


def add_metrics_service(service: MultiService, settings: Settings, reactor: Any,
                        source: Any) -> None:
    """``--metrics``: the Prometheus page of ``source`` and ``/health``, on its
    endpoint."""
    from popframe.ops.certificates import CertificateExpiry, certificate_paths
    from popframe.ops.exposition import metrics_service
    from popframe.ops.health import HealthPage, databases_of

    assert settings.metrics is not None
    certificates = CertificateExpiry(
        lambda: certificate_paths(settings.tls_cert, settings.listen))
    health = HealthPage(databases_of([settings.store, *settings.checkers]), reactor)
    try:
        page = metrics_service(settings.metrics, reactor, source, certificates,
                               raise_listen_errors_synchronously, health)
    except (ValueError, KeyError, TypeError, OSError) as error:
        raise ConfigurationError("--metrics", f"{settings.metrics!r}: {error}") from None
    page.setServiceParent(service)


def add_autoconfig_service(service: MultiService, settings: Settings, reactor: Any,
                           ports: Callable[[], Mapping[str, int | None]]) -> None:
    """``--autoconfig``: the client set-up documents on their endpoint;
    ``ports``: each ``--listen`` endpoint's bound port."""
    from popframe.autoconfig.web import autoconfig_service, documents_for
    from popframe.config.endpoints import parse_server_endpoint

    assert settings.autoconfig is not None
    # Parsed as the POP3 listeners are: ssl: and implicit-tls: (the
    # --tls-cert certificate) get popframe's TLS policy.
    endpoint = parse_server_endpoint(reactor, settings.autoconfig.endpoint, "--autoconfig",
                                     settings.tls)
    autoconfig_service(documents_for(settings, ports), endpoint,
                       raise_listen_errors_synchronously).setServiceParent(service)


def expiry_sweep(settings: Settings, reactor: Any) -> Service:
    """``--expire-sweep``: every so many seconds, the mail each user's
    EXPIRE says is due goes (:mod:`popframe.stores.expiry`)."""
    from twisted.application.internet import TimerService

    from popframe.interfaces import IUserSettings
    from popframe.stores.expiry import sweep

    sources = [c for c in settings.checkers if IUserSettings.providedBy(c)]
    timer = TimerService(settings.expire_sweep, sweep, settings.store, settings.expire,
                         reactor.seconds, sources)
    timer.clock = reactor
    return timer


def make_service(settings: Settings, reactor: Any = None) -> Service:
    if reactor is None:
        from twisted.internet import reactor
    try:
        if settings.workers > 1:
            # Worker processes adopt sockets this process opens.
            from popframe.workers import WorkerPool

            pool = WorkerPool(settings, reactor)
            service: Service = pool
            if settings.metrics or settings.autoconfig is not None:
                parent = MultiService()
                pool.setServiceParent(parent)
                service = parent
                if settings.metrics:
                    add_metrics_service(parent, settings, reactor, pool.metrics_source())
                if settings.autoconfig is not None:
                    # The parent serves the documents: it holds the listening sockets.
                    add_autoconfig_service(parent, settings, reactor, pool.bound_ports)
        else:
            service = make_listeners(settings, reactor)
    except ConfigurationError as error:
        raise SystemExit(f"popframe: {error}") from None
    if settings.expire_sweep > 0:  # in this process only, not in each worker
        if not isinstance(service, MultiService):
            parent = MultiService()
            service.setServiceParent(parent)
            service = parent
        expiry_sweep(settings, reactor).setServiceParent(service)
    if settings.demo is not None:
        from popframe.demo import demo_instructions

        print(demo_instructions(settings.demo), flush=True)
    return service

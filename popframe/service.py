"""Turns settings into a running service: one process's listeners, or a
pool of worker processes."""

from __future__ import annotations

from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet.endpoints import serverFromString

from popframe.assembly import make_factory, make_lmtp_factory
from popframe.config import ConfigurationError
from popframe.settings import Settings
from popframe.tls import harden_endpoint
from popframe.twisted_internals import raise_listen_errors_synchronously

__all__ = ["make_listeners", "make_service"]


def make_listeners(settings: Settings, reactor: Any) -> MultiService:
    """One process serving every ``--listen`` and ``--lmtp`` endpoint
    (``--workers 1``)."""
    service = MultiService()
    _listen(service, "--listen", settings.listen, make_factory(settings, reactor), reactor)
    if settings.lmtp:
        _listen(service, "--lmtp", settings.lmtp, make_lmtp_factory(settings, reactor), reactor)
    return service


def _listen(service: MultiService, key: str, descriptions: tuple[str, ...], factory: Any,
            reactor: Any) -> None:
    for description in descriptions:
        try:
            endpoint = harden_endpoint(serverFromString(reactor, description))
        except (ValueError, KeyError, TypeError, OSError) as error:
            raise ConfigurationError(key, f"{description!r}: {error}") from None
        listener = StreamServerEndpointService(endpoint, factory)
        # Fail start-up loudly when a port cannot be bound.
        raise_listen_errors_synchronously(listener)
        listener.setServiceParent(service)


def make_service(settings: Settings, reactor: Any = None) -> Service:
    if reactor is None:
        from twisted.internet import reactor
    try:
        if settings.workers > 1:
            # Worker processes adopt sockets this process opens.
            from popframe.workers import WorkerPool

            service: Service = WorkerPool(settings, reactor)
        else:
            service = make_listeners(settings, reactor)
    except ConfigurationError as error:
        raise SystemExit(f"popframe: {error}") from None
    if settings.demo is not None:
        from popframe.demo import demo_instructions

        print(demo_instructions(settings.demo), flush=True)
    return service

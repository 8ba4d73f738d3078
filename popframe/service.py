"""Turns checked options into a running service: listeners, portal, store."""

from __future__ import annotations

from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.cred.portal import Portal
from twisted.internet.endpoints import serverFromString

from popframe.config import ConfigurationError
from popframe.realm import MaildropRealm
from popframe.server import POP3Factory, ServerConfig
from popframe.tls import harden_endpoint


def make_factory(options: Any, clock: Any = None) -> POP3Factory:
    """The POP3 factory checked options describe (shared by every listener)."""
    portal = Portal(MaildropRealm(options.store), options["credCheckers"])
    config = ServerConfig(
        tls=options.tls,
        idle_timeout=options["idle-timeout"],
        preauth_timeout=options.get("preauth-timeout") or None,
        max_connections_per_ip=options.get("max-connections-per-ip", 0),
        allow_plaintext_auth=bool(options["allow-plaintext-auth"]),
        mechanisms=_as_mechanisms(options["mechanisms"]),
        master_users=frozenset(options["master-users"]),
        hostname=options["hostname"],
        throttle=getattr(options, "throttle", None),
        login_delay=getattr(options, "login_delay_policy", None),
    )
    return POP3Factory(portal, config, clock)


def _as_mechanisms(value: str | tuple[str, ...]) -> tuple[str, ...]:
    # The default arrives as the option's string, given values already parsed.
    from popframe.tap import _mechanism_list

    return value if isinstance(value, tuple) else _mechanism_list(value)


def make_listeners(options: Any, reactor: Any) -> MultiService:
    """One process serving every ``--listen`` endpoint (``--workers 1``)."""
    factory = make_factory(options, reactor)
    service = MultiService()
    for description in options["listen"]:
        try:
            endpoint = harden_endpoint(serverFromString(reactor, description))
        except (ValueError, KeyError, TypeError, OSError) as error:
            raise ConfigurationError("--listen", f"{description!r}: {error}") from None
        listener = StreamServerEndpointService(endpoint, factory)
        # Fail start-up loudly when a port cannot be bound.
        listener._raiseSynchronously = True
        listener.setServiceParent(service)
    return service


def make_service(options: Any, reactor: Any = None) -> Service:
    if reactor is None:
        from twisted.internet import reactor
    try:
        if options.get("workers", 1) > 1:
            # Worker processes adopt sockets this process opens: popframe/workers.py.
            from popframe.workers import WorkerPool

            service = WorkerPool(options, reactor)
        else:
            service = make_listeners(options, reactor)
    except ConfigurationError as error:
        raise SystemExit(f"popframe: {error}") from None
    if getattr(options, "demo", None) is not None:
        from popframe.demo import demo_instructions

        print(demo_instructions(options.demo), flush=True)
    return service

"""Turns checked options into a running service: listeners, portal, store."""

from __future__ import annotations

from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.cred.portal import Portal
from twisted.internet.endpoints import serverFromString

from popframe.config import ConfigurationError
from popframe.realm import MaildropRealm
from popframe.server import POP3Factory, ServerConfig


def make_factory(options: Any, clock: Any = None) -> POP3Factory:
    """The POP3 factory checked options describe (shared by every listener)."""
    portal = Portal(MaildropRealm(options.store), options["credCheckers"])
    config = ServerConfig(
        tls=options.tls,
        idle_timeout=options["idle-timeout"],
        allow_plaintext_auth=bool(options["allow-plaintext-auth"]),
    )
    return POP3Factory(portal, config, clock)


def make_service(options: Any, reactor: Any = None) -> MultiService:
    if reactor is None:
        from twisted.internet import reactor
    try:
        factory = make_factory(options, reactor)
        service = MultiService()
        for description in options["listen"]:
            try:
                endpoint = serverFromString(reactor, description)
            except (ValueError, KeyError, TypeError, OSError) as error:
                raise ConfigurationError("--listen", f"{description!r}: {error}") from None
            listener = StreamServerEndpointService(endpoint, factory)
            # Fail start-up loudly when a port cannot be bound.
            listener._raiseSynchronously = True
            listener.setServiceParent(service)
    except ConfigurationError as error:
        raise SystemExit(f"popframe: {error}") from None
    if getattr(options, "demo", None) is not None:
        from popframe.demo import demo_instructions

        print(demo_instructions(options.demo), flush=True)
    return service

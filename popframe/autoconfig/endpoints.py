"""What clients connect to, derived from the configuration: one
:class:`ClientEndpoint` per ``--listen`` endpoint that a client can log in
on (or per ``--autoconfig-port``), most secure first.

- TLS mode: an ``ssl:``, ``tls:`` or ``implicit-tls:`` endpoint (also
  behind ``haproxy:``) is implicit TLS (``SSL``); any other is ``STARTTLS``
  when ``--tls-cert`` is set, else ``plain``.
- Port: the one the listener is bound to (so ``tcp:0`` works), asked at
  each request; a listener with none (``unix:``) is left out.
- Authentication, from the mechanisms the checkers can serve: passwords
  sent as they are (USER, PLAIN, LOGIN) where the server takes them (after
  TLS, or anywhere with ``--allow-plaintext-auth``), and challenge-response
  (CRAM-MD5, APOP) anywhere.  An endpoint with neither is left out.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from popframe.autoconfig.settings import AutoconfigSettings, MailServer
from popframe.config.endpoints import IMPLICIT_TLS, split_endpoint

__all__ = ["Auth", "ClientEndpoint", "Security", "client_endpoints", "listener_security",
           "smtp_endpoint",
           "offered_auth"]


class Security(enum.Enum):
    """How a client secures the connection, in Thunderbird's words."""

    SSL = "SSL"
    STARTTLS = "STARTTLS"
    PLAIN = "plain"


class Auth(enum.Enum):
    """The kinds of password login a client can choose."""

    #: USER/PASS, PLAIN, LOGIN: the password itself, inside TLS.
    CLEARTEXT = "cleartext"
    #: CRAM-MD5, APOP: a proof of the password.
    CHALLENGE = "challenge"


_ORDER = {Security.SSL: 0, Security.STARTTLS: 1, Security.PLAIN: 2}
_TLS_TYPES = ("ssl", "tls", IMPLICIT_TLS)
_MODES = {"ssl": Security.SSL, "starttls": Security.STARTTLS, "plain": Security.PLAIN}


@dataclass(frozen=True)
class ClientEndpoint:
    host: str
    port: int
    security: Security
    #: What a client may log in with here, the preferred first.
    auth: tuple[Auth, ...]


def listener_security(description: str, stls: bool) -> Security:
    """The TLS mode of the ``--listen`` endpoint ``description``."""
    kind, _, _, rest = split_endpoint(description)
    while kind == "haproxy":
        kind, _, _, rest = split_endpoint(rest)
    if kind in _TLS_TYPES:
        return Security.SSL
    return Security.STARTTLS if stls else Security.PLAIN


def offered_auth(mechanisms: Iterable[str]) -> frozenset[Auth]:
    """The kinds of login the server offers, from the mechanisms the
    checkers can serve (``popframe.auth.credentials.serviceable``)."""
    names = set(mechanisms)
    found = set()
    if names & {"USER", "PLAIN", "LOGIN"}:
        found.add(Auth.CLEARTEXT)
    if names & {"CRAM-MD5", "APOP"}:
        found.add(Auth.CHALLENGE)
    return frozenset(found)


def _auth(security: Security, offered: frozenset[Auth], plaintext_anywhere: bool
          ) -> tuple[Auth, ...]:
    usable = [Auth.CLEARTEXT, Auth.CHALLENGE] if security is not Security.PLAIN else \
        [Auth.CHALLENGE] + ([Auth.CLEARTEXT] if plaintext_anywhere else [])
    return tuple(kind for kind in usable if kind in offered)


def client_endpoints(config: AutoconfigSettings, listeners: Mapping[str, int | None], stls: bool,
                     offered: frozenset[Auth], plaintext_anywhere: bool
                     ) -> list[ClientEndpoint]:
    """The endpoints to tell clients about, most secure first.
    ``listeners``: each ``--listen`` description and the port it is bound
    to (None: not a TCP port); ``stls``: whether STLS is offered."""
    found: list[tuple[Security, int]]
    if config.ports:
        found = [(_MODES[server.mode], server.port) for server in config.ports]
    else:
        found = [(listener_security(description, stls), port)
                 for description, port in listeners.items() if port]
    endpoints = []
    for security, port in dict.fromkeys(found):
        auth = _auth(security, offered, plaintext_anywhere)
        if auth:
            endpoints.append(ClientEndpoint(config.host, port, security, auth))
    endpoints.sort(key=lambda e: _ORDER[e.security])
    return endpoints


def smtp_endpoint(config: AutoconfigSettings) -> ClientEndpoint | None:
    """``--autoconfig-smtp`` as an endpoint (password login)."""
    server: MailServer | None = config.smtp
    if server is None:
        return None
    return ClientEndpoint(server.host or config.host, server.port, _MODES[server.mode],
                          (Auth.CLEARTEXT,))

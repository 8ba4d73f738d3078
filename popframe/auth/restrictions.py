"""A user's own restrictions on logging in (Dovecot's ``nologin`` and
``allow_nets`` passdb fields, or any checker's
:class:`~popframe.interfaces.UserSettings`), checked after the password
was verified, as Dovecot does: the reason is shown only to whoever knows
the password."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Any

from popframe.errors import AuthenticationFailed
from popframe.interfaces import UserSettings

__all__ = ["LoginDisabled", "NetworkNotAllowed", "check_restrictions", "parse_networks"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class LoginDisabled(AuthenticationFailed):
    """The account may not log in (``nologin``); the message is its
    ``reason``, or this default."""

    default_message = "login disabled for this account"


class NetworkNotAllowed(AuthenticationFailed):
    """The client's address is outside the user's ``allow_nets``."""

    default_message = "login not allowed from this address"


def parse_networks(text: str) -> tuple[str, ...]:
    """Dovecot's ``allow_nets`` value (``10.0.0.0/8,::1,local``) as
    normalised networks; ``ValueError`` names a bad one."""
    networks: list[str] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if item == "local":
            networks.append(item)
            continue
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ValueError(f"{item!r} is not an address or a CIDR network") from None
    if not networks:
        raise ValueError("no networks")
    return tuple(networks)


@lru_cache(maxsize=1024)
def _networks(allowed: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(n, strict=False) for n in allowed if n != "local")


def _allowed(allowed: tuple[str, ...], peer: Any) -> bool:
    host = getattr(peer, "host", None)
    if not isinstance(host, str):  # a UNIX socket
        return "local" in allowed
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    candidates = (address, mapped) if mapped is not None else (address,)
    return any(a in network for network in _networks(allowed) for a in candidates)


def check_restrictions(settings: UserSettings | None, peer: Any) -> None:
    """Raise :class:`LoginDisabled` or :class:`NetworkNotAllowed` when
    ``settings`` refuse a login from ``peer`` (the client's address:
    behind a proxy, the one PROXY or XCLIENT named)."""
    if settings is None:
        return
    if settings.login_refused is not None:
        raise LoginDisabled(settings.login_refused or None)
    if settings.allowed_networks is not None and not _allowed(settings.allowed_networks, peer):
        raise NetworkNotAllowed()

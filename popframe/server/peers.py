"""Who is on the other end of a connection: for the plaintext-login rule,
the per-address limit, and log lines."""

from __future__ import annotations

import functools
import ipaddress
from typing import Any

from twisted.internet.address import UNIXAddress

from popframe.twisted_internals import behind_haproxy

__all__ = ["behind_proxy", "is_loopback", "peer_text"]


def is_loopback(address: object) -> bool:
    if isinstance(address, UNIXAddress):
        return True
    return _is_loopback_host(getattr(address, "host", ""))


@functools.lru_cache(maxsize=1024)
def _is_loopback_host(host: str) -> bool:
    """Cached: parsing the address was 3% of the reactor in a login-heavy
    benchmark, and clients come back from the same few addresses."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def behind_proxy(transport: Any) -> bool:
    """Behind a ``haproxy:`` endpoint ``getPeer()`` names the proxy until
    the PROXY header is read, which is after ``connectionMade``: a proxy
    on loopback must not make every client look local."""
    return behind_haproxy(transport)


def peer_text(transport: Any) -> str:
    """``host:port`` of the client, for one log line."""
    peer = transport.getPeer()
    host, port = getattr(peer, "host", None), getattr(peer, "port", None)
    return f"{host}:{port}" if host is not None else str(peer)

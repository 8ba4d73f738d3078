"""Every use of a Twisted private API, in one place.

Each function here leans on something Twisted does not promise to keep;
``tests/test_twisted_internals.py`` has a test for each that fails when
Twisted changes under it, and ``setup.cfg`` bounds Twisted to the versions
those tests passed with.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet import tcp

__all__ = ["behind_haproxy", "plain_tcp", "send_now"]


# -- the direct writer (popframe.server.protocol._write) ----------------------------


def plain_tcp(transport: object) -> tcp.Connection | None:
    """``transport`` if it is Twisted's own TCP connection (not a
    PROXY-protocol wrapper), which :func:`send_now` may write to while it
    is not TLS."""
    return transport if isinstance(transport, tcp.Connection) else None


def send_now(transport: tcp.Connection, pieces: Sequence[bytes]) -> int:
    """Send ``pieces`` straight to the kernel in one ``sendmsg`` when the
    transport holds nothing unsent; return the octets sent (0: nothing was,
    write them through the transport).

    Twisted's own ``write`` waits for the next reactor turn (an epoll round
    and two ``epoll_ctl`` per reply).  Relies on ``tcp.Connection``'s
    ``dataBuffer``, ``offset`` and ``_tempDataLen`` (its unsent output),
    ``TLS`` (set by ``startTLS``: STLS) and ``socket``; whatever the kernel
    does not take must then go through ``transport.write`` so order and
    back-pressure stay Twisted's."""
    if (not transport.connected or transport.disconnecting or transport.TLS
            or transport._tempDataLen or transport.offset != len(transport.dataBuffer)):
        return 0
    try:
        return transport.socket.sendmsg(pieces)  # type: ignore[no-any-return]
    except OSError:  # EAGAIN, or an error the transport will report
        return 0


# -- the PROXY protocol wrapper ------------------------------------------------------


def behind_haproxy(transport: Any) -> bool:
    """Whether ``transport`` is a ``haproxy:`` endpoint's wrapper, whose
    ``getPeer()`` names the proxy until the PROXY header is read (after
    ``connectionMade``).  The wrapper class is private to Twisted."""
    from twisted.protocols.haproxy._wrapper import HAProxyProtocolWrapper

    return isinstance(transport, HAProxyProtocolWrapper)

"""systemd's readiness protocol (``sd_notify(3)``), in a few lines.

Under ``Type=notify`` systemd puts a datagram socket's address in
``NOTIFY_SOCKET``; the service sends ``READY=1`` once it serves,
``RELOADING=1`` and then ``READY=1`` around a reload, ``STOPPING=1`` when
it starts to stop, and ``STATUS=...`` lines for ``systemctl status``.
Without the variable (not under systemd) every call does nothing.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

from twisted.logger import Logger

__all__ = ["NOTIFY_SOCKET", "notify", "ready", "reloading", "stopping"]

NOTIFY_SOCKET = "NOTIFY_SOCKET"

log = Logger(namespace="popframe.ops")


def notify(*assignments: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Send ``assignments`` (``"READY=1"``...) to systemd in one datagram;
    False when not under systemd or the socket refuses (logged: systemd
    would wait for a READY=1 that never comes)."""
    address = environ.get(NOTIFY_SOCKET)
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(assignments).encode("utf-8"))
    except OSError as error:
        log.warn("cannot notify systemd at {address}: {error}", address=address, error=error)
        return False
    return True


def ready(status: str = "", environ: Mapping[str, str] = os.environ) -> bool:
    return notify("READY=1", *_status(status), environ=environ)


def reloading(status: str = "reloading", environ: Mapping[str, str] = os.environ) -> bool:
    # MONOTONIC_USEC: systemd 253's Type=notify-reload wants to know when.
    return notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}",
                  *_status(status), environ=environ)


def stopping(status: str = "stopping", environ: Mapping[str, str] = os.environ) -> bool:
    return notify("STOPPING=1", *_status(status), environ=environ)


def _status(text: str) -> list[str]:
    return [f"STATUS={' '.join(text.split())}"] if text else []

"""A loopback port nothing listens on, for a server the test starts that
cannot report its own port (slapd, Postfix), or a client that must be
refused.  ``twistd pop3`` is started on port 0 instead: ``start_server``
reads the ports it took from its log, which has no race."""

from __future__ import annotations

import socket

__all__ = ["free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free on ``host`` just now (another process may take
    it before it is used: only for servers that cannot bind port 0)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])

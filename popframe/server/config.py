"""The settings every connection of a listener shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from popframe.auth.credentials import DEFAULT_MECHANISMS
from popframe.logindelay import LoginDelay
from popframe.protocol import Limits
from popframe.throttle import Throttle

__all__ = ["ServerConfig"]


@dataclass(frozen=True)
class ServerConfig:
    """Settings shared by every connection of one listener."""

    # CertificateOptions for STLS; None means STLS is not offered.
    tls: Any = None
    idle_timeout: float = 600.0
    # Seconds from connect to a successful login (slowloris); None: only
    # the idle timeout applies.  RFC 1939's 10-minute minimum is for the
    # autologout timer of a logged-in session.
    preauth_timeout: float | None = None
    # Connections at once from one address (an IPv6 /64), per factory (so
    # per worker process); 0: no limit.  Not applied behind haproxy:.
    max_connections_per_ip: int = 0
    allow_plaintext_auth: bool = False
    # SASL mechanisms (and APOP) to offer where the checkers can serve them.
    mechanisms: tuple[str, ...] = DEFAULT_MECHANISMS
    # Users who may log in as someone else (a PLAIN authorization identity).
    master_users: frozenset[str] = frozenset()
    hostname: str = "localhost"
    implementation: str = "popframe"
    limits: Limits = field(default_factory=Limits)
    chunk_size: int = 64 * 1024
    # Failed-login throttling (popframe.throttle); None answers failures at once.
    throttle: Throttle | None = None
    # RFC 2449 LOGIN-DELAY (popframe.logindelay); None: not enforced.
    login_delay: LoginDelay | None = None

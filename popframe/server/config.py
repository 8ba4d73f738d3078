"""The settings every connection of a listener shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from popframe.auth.credentials import DEFAULT_MECHANISMS
from popframe.logindelay import LoginDelay
from popframe.protocol import Limits
from popframe.throttle import Throttle, TrustedNetworks

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
    # Client workarounds (popframe.protocol.encoding.WORKAROUNDS); none by default.
    workarounds: frozenset[str] = frozenset()
    # RFC 2449 EXPIRE: days retrieved mail stays (0: deleted at QUIT); None:
    # NEVER.  A checker's UserSettings.expire overrides it per user.
    expire: int | None = None
    # Connections at once to the whole server (all workers); 0: no limit.
    max_connections: int = 0
    # Sessions at once of one user, in this process; 0: no limit.
    max_sessions_per_user: int = 0
    # Proxies and webmails: exempt from the per-address limit and failure
    # block, allowed to forward a client's address (XCLIENT).  None here.
    trusted_networks: TrustedNetworks = field(default_factory=TrustedNetworks)

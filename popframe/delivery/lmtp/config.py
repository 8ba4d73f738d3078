"""What every LMTP connection of a listener shares."""

from __future__ import annotations

from dataclasses import dataclass, field

from popframe.delivery.recipients import RecipientRules

__all__ = ["DEFAULT_MAX_RECIPIENTS", "DEFAULT_MAX_SIZE", "LMTPConfig"]

DEFAULT_MAX_SIZE = 50 * 1024 * 1024
#: As Postfix's lmtp_destination_recipient_limit (50), with room.
DEFAULT_MAX_RECIPIENTS = 1000


@dataclass(frozen=True, kw_only=True)
class LMTPConfig:
    #: This server's name, in the greeting and the LHLO reply.
    hostname: str = "localhost"
    #: The largest message taken, in octets (SIZE; 552 above it); 0: no limit.
    max_size: int = DEFAULT_MAX_SIZE
    #: Recipients per transaction; more get 452 (the client sends them later).
    max_recipients: int = DEFAULT_MAX_RECIPIENTS
    #: Seconds of client silence before hanging up (RFC 5321 4.5.3.2: 5 minutes).
    idle_timeout: float = 300.0
    #: Where messages are spooled as they arrive; None: the system's temp dir.
    spool_directory: str | None = None
    #: How recipients become user names.
    recipients: RecipientRules = field(default_factory=RecipientRules)

"""Why a delivery did not happen, as types: each maps, in this one place,
to the exit status ``popframe deliver`` returns (sysexits.h, which MTAs
read: Postfix defers on 75 and 78, bounces on the others) and to the
reply the LMTP listener gives for one recipient (RFC 2033, RFC 3463
enhanced status codes).
"""

from __future__ import annotations

from twisted.logger import Logger
from twisted.python.failure import Failure

from popframe.errors import PermanentFailure, TemporaryFailure

__all__ = [
    "EX_CONFIG",
    "EX_DATAERR",
    "EX_NOUSER",
    "EX_OK",
    "EX_TEMPFAIL",
    "EX_UNAVAILABLE",
    "BadAddress",
    "DeliveryDeferred",
    "DeliveryFailure",
    "DeliveryRefused",
    "MessageTooBig",
    "NotAMessage",
    "UnknownUser",
    "as_delivery_failure",
]

log = Logger(namespace="popframe.delivery")

# sysexits.h
EX_OK = 0
EX_DATAERR = 65
EX_NOUSER = 67
EX_UNAVAILABLE = 69
EX_TEMPFAIL = 75
EX_CONFIG = 78


class DeliveryFailure(Exception):
    """A message not delivered to one recipient.  ``str()`` is the text
    the MTA logs (and may quote in a bounce): never a path or a traceback."""

    exit_code = EX_TEMPFAIL
    #: LMTP reply code and RFC 3463 enhanced status code.
    code = 451
    status = "4.3.0"
    default_message = "temporary failure, try again later"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.default_message)

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500

    def reply(self, recipient: str) -> str:
        """The LMTP reply line (without CRLF) for ``recipient``."""
        return f"{self.code} {self.status} <{recipient}> {self}"


class DeliveryDeferred(DeliveryFailure):
    """The store cannot take the message now; the MTA tries again."""

    code, status = 451, "4.2.0"
    default_message = "mailbox temporarily unavailable, try again later"


class DeliveryRefused(DeliveryFailure):
    """The store will never take it (a permanent store failure)."""

    exit_code, code, status = EX_UNAVAILABLE, 550, "5.2.0"
    default_message = "mailbox unavailable"


class UnknownUser(DeliveryFailure):
    """No configured checker knows the user."""

    exit_code, code, status = EX_NOUSER, 550, "5.1.1"
    default_message = "user unknown"


class BadAddress(DeliveryFailure):
    """The recipient cannot name a maildrop (no local part, a path
    separator, control characters)."""

    exit_code, code, status = EX_NOUSER, 550, "5.1.3"
    default_message = "bad recipient address"


class NotAMessage(DeliveryFailure):
    """The input is no message at all (nothing, or only white space)."""

    exit_code, code, status = EX_DATAERR, 554, "5.6.0"
    default_message = "no message (empty input)"


class MessageTooBig(DeliveryFailure):
    """Over the configured size limit."""

    exit_code, code, status = EX_DATAERR, 552, "5.3.4"
    default_message = "message too big"


def as_delivery_failure(failure: Failure | BaseException) -> DeliveryFailure:
    """The delivery failure a store's (or a checker's) error means; anything
    unexpected is logged with its traceback and deferred, so the MTA keeps
    the message rather than bouncing it for a bug of ours."""
    from popframe.stores.template import UnsafeUserName

    error = failure.value if isinstance(failure, Failure) else failure
    if isinstance(error, DeliveryFailure):
        return error
    if isinstance(error, UnsafeUserName):
        log.warn("refusing user name: {reason}", reason=error.reason)
        return BadAddress()
    if isinstance(error, TemporaryFailure):
        return DeliveryDeferred()
    if isinstance(error, PermanentFailure):
        return DeliveryRefused()
    log.failure("delivery failed", failure if isinstance(failure, Failure) else Failure(error))
    return DeliveryFailure()

"""Errors that end in a POP3 reply.

Every failure a client can see is one of these types.  Each carries the
RFC 2449 / RFC 3206 response code it is answered with; the one place that
turns them into ``-ERR`` lines is :func:`popframe.protocol.replies.error_reply`.
Backends raise them too (``MaildropInUse``, ``TemporaryFailure``...), so this
module imports nothing from Twisted.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationFailed",
    "BadArguments",
    "ClientError",
    "LineTooLong",
    "LockLost",
    "LoginDelayed",
    "MaildropInUse",
    "MessageDeleted",
    "NoSuchMessage",
    "POP3Error",
    "PermanentFailure",
    "ResponseCode",
    "TLSNotAvailable",
    "TLSRequired",
    "TemporaryFailure",
    "UnknownCommand",
    "WrongState",
]


class ResponseCode:
    """The response codes popframe sends (RFC 2449 section 8, RFC 3206)."""

    IN_USE = "IN-USE"
    LOGIN_DELAY = "LOGIN-DELAY"
    AUTH = "AUTH"
    SYS_TEMP = "SYS/TEMP"
    SYS_PERM = "SYS/PERM"


class POP3Error(Exception):
    """A failure that is answered with one ``-ERR`` line.

    ``str(error)`` is what the client reads: it must never hold secrets,
    paths or tracebacks.
    """

    code: str | None = None
    default_message = "command failed"

    def __init__(self, message: str | None = None, **params: object) -> None:
        # The text is a template of popframe.protocol.catalogue, filled in
        # with ``params``, so a reply can say it in the client's language.
        self.template = message or self.default_message
        self.params = params
        super().__init__(self.template.format(**params) if params else self.template)

    @property
    def message(self) -> str:
        return str(self.args[0])


# -- the client's fault -----------------------------------------------------


class ClientError(POP3Error):
    """The client sent something wrong; counted towards its bad-command limit."""


class UnknownCommand(ClientError):
    default_message = "unknown command"


class BadArguments(ClientError):
    default_message = "bad arguments"


class LineTooLong(ClientError):
    default_message = "command line too long"


class WrongState(ClientError):
    default_message = "command not valid in this state"


class NoSuchMessage(ClientError):
    default_message = "no such message"


class MessageDeleted(ClientError):
    default_message = "message already deleted"


class TLSRequired(ClientError):
    default_message = "plaintext authentication is disabled, use STLS first"


class TLSNotAvailable(ClientError):
    default_message = "STLS not available"


# -- authentication and the maildrop -----------------------------------------


class AuthenticationFailed(POP3Error):
    """Bad credentials.  One message whatever the reason, so nothing leaks."""

    code = ResponseCode.AUTH
    default_message = "authentication failed"


class MaildropInUse(POP3Error):
    """Another session (in any process, on any node) holds the maildrop."""

    code = ResponseCode.IN_USE
    default_message = "maildrop already locked by another session"


class LoginDelayed(POP3Error):
    """The user logged in again sooner than LOGIN-DELAY allows."""

    code = ResponseCode.LOGIN_DELAY
    default_message = "login delay not yet expired"


class TemporaryFailure(POP3Error):
    """A backend failure that may pass (disk full, database down, timeout)."""

    code = ResponseCode.SYS_TEMP
    default_message = "temporary system failure, try again later"


class LockLost(TemporaryFailure):
    """The maildrop lock lapsed during the session (a lease expired while
    the process was paused, a lock connection broke and someone else took
    the name): its deletions are refused."""

    default_message = "maildrop lock lost, please reconnect"


class PermanentFailure(POP3Error):
    """A backend failure that will not pass by retrying (corrupt maildrop)."""

    code = ResponseCode.SYS_PERM
    default_message = "permanent system failure"

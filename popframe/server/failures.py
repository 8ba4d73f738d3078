"""What a client sees of a backend's failure: the one place a failure from
a checker, a store or the throttle becomes a :class:`POP3Error`."""

from __future__ import annotations

from twisted.cred.error import LoginFailed, UnauthorizedLogin, UnhandledCredentials
from twisted.logger import Logger
from twisted.python.failure import Failure

from popframe.errors import AuthenticationFailed, POP3Error, TemporaryFailure

__all__ = ["as_pop3_error", "backend_failure_kind"]

log = Logger(namespace="popframe.server")


def as_pop3_error(failure: Failure) -> POP3Error:
    """Map a backend failure to the error the client sees; anything
    unexpected is logged with its traceback and answered [SYS/TEMP]."""
    error = failure.value
    if isinstance(error, POP3Error):
        return error
    if isinstance(error, (UnauthorizedLogin, UnhandledCredentials, LoginFailed)):
        return AuthenticationFailed()
    log.failure("unexpected backend failure", failure)
    return TemporaryFailure()


def backend_failure_kind(failure: Failure) -> str:
    """``"timeout"`` when a backend failed by timing out (the exception, or
    the one it was raised from, is a timeout or a cancellation), else
    ``"error"``: the two kinds the metrics count apart."""
    from twisted.internet import defer, error

    timeouts = (TimeoutError, defer.TimeoutError, defer.CancelledError, error.TimeoutError)
    value: BaseException | None = failure.value
    for _ in range(4):  # the error, and what it was raised from
        if value is None:
            break
        if isinstance(value, timeouts):
            return "timeout"
        value = value.__cause__ or value.__context__
    return "error"

"""RFC 2449 LOGIN-DELAY: the least time between two logins of one user.

A login that succeeds claims ``login:USER`` in the throttle store for the
user's delay (an atomic set-if-absent with expiry, so every process and
node sharing a Redis store agrees, and two racing logins cannot both win).
A login while the claim lives is refused with ``-ERR [LOGIN-DELAY]``, after
the password was verified (a wrong password still gets ``[AUTH]``, so the
code tells nothing to someone who does not know the password), and does
not extend the delay.

The delay is ``--login-delay`` for everyone, or a user's own when a checker
provides :class:`IUserSettings` and has a value for that user (the
passwd-file checker reads a ``login_delay=SECONDS`` extra field).  0 means
no delay.  When the store fails, logins are let through (fail open).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface

from popframe.throttle import IThrottleStore, MemoryThrottleStore, StoreUnavailable

log = Logger()


class IUserSettings(Interface):
    """Per-user settings a checker (or any object among the portal's
    checkers) can supply.  Optional: checkers without it get the defaults."""

    def login_delay(user: str) -> Deferred:
        """Fire with ``user``'s LOGIN-DELAY in seconds, or None to use the
        server's default."""


class LoginDelay:
    """The LOGIN-DELAY policy: ``default`` seconds (None: no delay unless a
    user has one of their own), claims in ``store``."""

    def __init__(self, store: IThrottleStore | None = None, default: int | None = None) -> None:
        self.store = store if store is not None else MemoryThrottleStore()
        self.default = default

    def __repr__(self) -> str:
        return f"LoginDelay({self.store!r}, default={self.default})"

    def delay_for(self, sources: Any, user: str) -> Deferred[int | None]:
        """``user``'s delay: the first value an :class:`IUserSettings`
        among ``sources`` (e.g. ``portal.checkers.values()``) has, else the
        default.  A source that fails is logged and skipped."""
        providers: list[Any] = []
        for source in sources:
            if IUserSettings.providedBy(source) and source not in providers:
                providers.append(source)
        d: Deferred[int | None] = succeed(None)
        for provider in providers:
            d.addCallback(_ask, provider, user)
        d.addCallback(lambda found: self.default if found is None else found)
        return d

    def admit(self, user: str, delay: int | None) -> Deferred[bool]:
        """Whether ``user`` may log in now; if so, the next login must wait
        ``delay`` seconds."""
        if not delay or delay <= 0:
            return succeed(True)
        d = self.store.claim(_key(user), delay)
        d.addErrback(_fail_open)
        return d


def _ask(found: int | None, provider: Any, user: str) -> Any:
    if found is not None:
        return found
    d = provider.login_delay(user)

    def failed(failure: Failure) -> None:
        log.failure("looking up the login delay of {user!r} failed", failure, user=user)
        return None

    return d.addCallbacks(_as_seconds, failed)


def _as_seconds(value: object) -> int | None:
    if value is None:
        return None
    try:
        return max(int(value), 0)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        log.error("ignoring a login delay that is not a number of seconds: {value!r}", value=value)
        return None


def _key(user: str) -> str:
    return "login:" + user


def _fail_open(failure: Failure) -> bool:
    if not failure.check(StoreUnavailable):
        log.failure("login-delay store failed; letting the login through", failure)
    return True


__all__ = ["IUserSettings", "LoginDelay"]

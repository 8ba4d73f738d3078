"""RFC 2449 LOGIN-DELAY: the least time between two logins of one user.

A login that succeeds claims ``login:USER`` in the throttle store for the
user's delay (an atomic set-if-absent with expiry, so every process and
node sharing a Redis store agrees, and two racing logins cannot both win).
A login while the claim lives is refused with ``-ERR [LOGIN-DELAY]``, after
the password was verified (a wrong password still gets ``[AUTH]``, so the
code tells nothing to someone who does not know the password), and does
not extend the delay.

The delay is ``--login-delay`` for everyone, or a user's own when a checker
provides :class:`~popframe.interfaces.auth.IUserSettings` and has a value
for that user (the passwd-file checker reads a ``login_delay=SECONDS``
extra field).  0 means no delay.  When the store fails, logins are let
through (fail open).
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from popframe.interfaces.auth import UserSettings
from popframe.interfaces.throttle import IThrottleStore, StoreUnavailable
from popframe.throttle import MemoryThrottleStore

log = Logger()


class LoginDelay:
    """The LOGIN-DELAY policy: ``default`` seconds (None: no delay unless a
    user has one of their own), claims in ``store``."""

    def __init__(self, store: IThrottleStore | None = None, default: int | None = None) -> None:
        self.store = store if store is not None else MemoryThrottleStore()
        self.default = default

    def __repr__(self) -> str:
        return f"LoginDelay({self.store!r}, default={self.default})"

    def delay_for(self, settings: UserSettings | None) -> int | None:
        """The delay of a user with ``settings``: their own, else the
        default."""
        own = settings.login_delay if settings is not None else None
        return self.default if own is None else max(own, 0)

    def admit(self, user: str, delay: int | None) -> Deferred[bool]:
        """Whether ``user`` may log in now; if so, the next login must wait
        ``delay`` seconds."""
        if not delay or delay <= 0:
            return succeed(True)
        d = self.store.claim(_key(user), delay)
        d.addErrback(_fail_open)
        return d


def _key(user: str) -> str:
    return "login:" + user


def _fail_open(failure: Failure) -> bool:
    if not failure.check(StoreUnavailable):
        log.failure("login-delay store failed; letting the login through", failure)
    return True


__all__ = ["LoginDelay"]

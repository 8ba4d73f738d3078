"""The contract of the store behind failed-login throttling and LOGIN-DELAY:
counters and claims with expiry, shared by everyone who must agree (one
process: ``MemoryThrottleStore``; every process on every node: the Redis
store)."""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.defer import Deferred
from zope.interface import Interface

__all__ = ["IThrottleStore", "StoreUnavailable"]


class StoreUnavailable(Exception):
    """The throttle store cannot be reached (it recently failed).  Logins
    then go on (fail open): an outage of a cache must not lock every user
    out of their mail."""


class IThrottleStore(Interface):
    """Counters and claims with expiry.  A store that cannot answer fails
    its Deferreds (with :class:`StoreUnavailable` for an outage it already
    reported)."""

    def increment(keys: Sequence[str], ttl: float) -> Deferred[list[int]]:
        """Add 1 to each key; a key that did not exist expires ``ttl``
        seconds from now.  Fires with the new counts, in order."""

    def counts(keys: Sequence[str]) -> Deferred[list[int]]:
        """Fire with each key's count (0 for a missing or expired key)."""

    def reset(key: str) -> Deferred[None]:
        """Remove ``key``."""

    def claim(key: str, ttl: float) -> Deferred[bool]:
        """Set ``key`` for ``ttl`` seconds unless it is set: fires with True
        if this call set it (atomically: one of two racing callers wins)."""

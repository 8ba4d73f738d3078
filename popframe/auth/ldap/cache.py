"""What the LDAP checker remembers between logins, so a burst of logins
(every client polling at the top of the minute) does not become a burst of
directory requests.

- Successful binds: :class:`popframe.auth.cache.VerifiedPasswords`, the
  cache ``--auth-cache-ttl`` gives every checker, keyed by the entry's DN
  and an HMAC of the password: another password (a changed one) goes to
  the directory again.  ``cache_ttl``; off at 0.
- :class:`RecentFailures`: refused user and password pairs, by an HMAC of
  both, for ``negative_cache_ttl`` (short): the same wrong guess again is
  refused without asking.  Unknown users and wrong passwords are
  remembered alike, so a hit tells nothing about which users exist; the
  right password after a wrong one is a different key and goes through.
- :class:`Expiring`: a small map with a TTL and a size bound, for the
  entries found (their DN, avatar and settings) and unknown names.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Expiring", "RecentFailures"]

K = TypeVar("K")
V = TypeVar("V")

#: Entries kept at most per map; the least recently stored go first.
DEFAULT_MAX_ENTRIES = 100_000


class Expiring(Generic[K, V]):
    """A map whose entries expire ``ttl`` seconds after they were put.
    Used from the reactor thread only."""

    def __init__(self, ttl: float, max_entries: int = DEFAULT_MAX_ENTRIES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        found = self._entries.get(key)
        if found is None:
            return None
        expires, value = found
        if expires <= self._clock():
            del self._entries[key]
            return None
        return value

    def put(self, key: K, value: V) -> None:
        if self.ttl <= 0:
            return
        self._entries.pop(key, None)
        self._entries[key] = (self._clock() + self.ttl, value)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def pop(self, key: K) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()


class RecentFailures:
    """Refused ``(user, password)`` pairs for ``ttl`` seconds, stored only
    as an HMAC under a key of this process."""

    def __init__(self, ttl: float, max_entries: int = DEFAULT_MAX_ENTRIES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._key = os.urandom(32)
        self._failures: Expiring[bytes, bool] = Expiring(ttl, max_entries, clock)

    def __len__(self) -> int:
        return len(self._failures)

    def _digest(self, user: str, password: bytes) -> bytes:
        message = user.encode("utf-8", "surrogatepass") + b"\0" + password
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def failed(self, user: str, password: bytes) -> bool:
        """Whether this pair was refused within the TTL."""
        return self._failures.get(self._digest(user, password)) is not None

    def remember(self, user: str, password: bytes) -> None:
        self._failures.put(self._digest(user, password), True)

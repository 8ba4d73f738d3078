"""Recently verified passwords, so a client polling every minute does not
pay a slow hash (SHA512-CRYPT, bcrypt, argon2) at every login.

Off unless ``--auth-cache-ttl`` is given.  Per user it keeps the stored
credential the password was checked against (a changed or removed
password in the source stops matching at once), an HMAC-SHA256 of the
password under a random key of this process, and an expiry.  Only
successes are kept: a wrong password always costs the full hash, so the
time of a failure says nothing about which users exist.

The trade-off, documented for admins: whoever can read this process's
memory can test guesses for the cached users at HMAC speed rather than at
the hash's (they could also read passwords in flight), for at most the TTL
after each user's last login.  Dovecot's auth cache keeps the stored hash
and still runs it; this cache skips it, which is its point.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["DEFAULT_MAX_ENTRIES", "VerifiedPasswords"]

#: Users kept at most; the least recently verified go first.
DEFAULT_MAX_ENTRIES = 100_000


@dataclass(frozen=True, slots=True)
class _Entry:
    stored: str
    digest: bytes
    expires: float


class VerifiedPasswords:
    """``remember`` after a successful check, ``verified`` before the next.

    Safe to call from the reactor thread and a checker's pool threads.
    """

    def __init__(self, ttl: float, max_entries: int = DEFAULT_MAX_ENTRIES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._key = os.urandom(32)
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def _digest(self, user: str, password: bytes) -> bytes:
        message = user.encode("utf-8", "surrogatepass") + b"\0" + password
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def remember(self, user: str, stored: str, password: bytes) -> None:
        """``password`` was just verified against ``stored``, ``user``'s
        credential in the source."""
        entry = _Entry(stored, self._digest(user, password), self._clock() + self.ttl)
        with self._lock:
            self._entries.pop(user, None)
            self._entries[user] = entry
            while len(self._entries) > self.max_entries:
                del self._entries[next(iter(self._entries))]

    def verified(self, user: str, stored: str, password: bytes) -> bool:
        """Whether ``password`` was verified against ``stored`` within the TTL."""
        entry = self._entries.get(user)
        if entry is None or entry.stored != stored:
            return False
        if entry.expires <= self._clock():
            with self._lock:
                if self._entries.get(user) is entry:
                    del self._entries[user]
            return False
        return hmac.compare_digest(entry.digest, self._digest(user, password))

    def forget(self, user: str) -> None:
        with self._lock:
            self._entries.pop(user, None)

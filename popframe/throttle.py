"""Failed-login throttling, and the store it shares with LOGIN-DELAY.

Each failed login adds one to a counter for the client's address and one
for the user name it tried.  The ``-ERR`` for a failure is sent after a
delay that doubles with the failures::

    delay = min(base * 2 ** (failures - 1), max_delay)

where ``failures`` is the largest of the address's, the user name's and
this connection's counts.  A connection is dropped (``-ERR [AUTH] too many
failures``) at its ``max_auth_failures``-th failure, or when its address
reaches ``max_ip_failures`` in the window; then new logins from that address
are refused, without checking the password, until the window ends.

Only failures are delayed: a correct password is answered at once, so an
attacker who hammers a user name from elsewhere delays his own failures,
never the legitimate user's logins.  A success resets the user name's
counter but not the address's: otherwise an attacker with one account of
his own could log into it between guesses at others and never slow down.

Counters live in an :class:`IThrottleStore`: :class:`MemoryThrottleStore`
(one process) or :class:`RedisThrottleStore` (shared by processes and
nodes).  A counter expires ``window`` seconds after its first failure (a
fixed window, so a client that keeps failing is unblocked at the end of it).
When the store fails the throttle *fails open* (see :class:`Throttle`).
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar
from urllib.parse import urlsplit

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from popframe.config import ConfigurationError
from popframe.errors import AuthenticationFailed
from popframe.interfaces.throttle import IThrottleStore, StoreUnavailable
from popframe.threads import ThreadPoolRunner

T = TypeVar("T")

log = Logger()

DEFAULT_PREFIX = "popframe:"


class TooManyFailures(AuthenticationFailed):
    """Too many failed logins (on this connection, or from this address):
    the connection is dropped after this reply."""

    default_message = "too many failures"


# -- the store ------------------------------------------------------------------


@implementer(IThrottleStore)
class MemoryThrottleStore:
    """Counters in this process's memory.  At most ``max_entries`` keys,
    least recently used evicted first, so a flood of made-up user names
    cannot grow the server: an attacker's own address stays recently used.
    ``clock`` (``IReactorTime``; the reactor by default) tells the time."""

    def __init__(self, clock: Any = None, max_entries: int = 100_000) -> None:
        self._clock = clock
        self.max_entries = max_entries
        # key -> (value, expires at)
        self._entries: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def _now(self) -> float:
        if self._clock is None:
            from twisted.internet import reactor  # not at import: twistd picks it later

            self._clock = reactor
        return float(self._clock.seconds())

    def _live(self, key: str, now: float) -> tuple[int, float] | None:
        entry = self._entries.get(key)
        if entry is not None and entry[1] <= now:
            del self._entries[key]
            return None
        return entry

    def _store(self, key: str, entry: tuple[int, float], now: float) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        if len(self._entries) > self.max_entries:
            for old in [k for k, (_, expires) in self._entries.items() if expires <= now]:
                del self._entries[old]
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def increment(self, keys: Sequence[str], ttl: float) -> Deferred[list[int]]:
        now = self._now()
        counts = []
        for key in keys:
            entry = self._live(key, now)
            value, expires = entry if entry is not None else (0, now + ttl)
            self._store(key, (value + 1, expires), now)
            counts.append(value + 1)
        return succeed(counts)

    def counts(self, keys: Sequence[str]) -> Deferred[list[int]]:
        now = self._now()
        return succeed([(self._live(key, now) or (0, 0.0))[0] for key in keys])

    def reset(self, key: str) -> Deferred[None]:
        self._entries.pop(key, None)
        return succeed(None)

    def claim(self, key: str, ttl: float) -> Deferred[bool]:
        now = self._now()
        if self._live(key, now) is not None:
            return succeed(False)
        self._store(key, (1, now + ttl), now)
        return succeed(True)

    def __len__(self) -> int:
        return len(self._entries)


# INCR every key; give a key with no expiry (a new one) the window.  One
# script, so the count and its expiry are set atomically.
_INCREMENT = """
local counts = {}
for i, key in ipairs(KEYS) do
    counts[i] = redis.call('INCR', key)
    if redis.call('PTTL', key) == -1 then
        redis.call('PEXPIRE', key, ARGV[1])
    end
end
return counts
"""


@implementer(IThrottleStore)
class RedisThrottleStore:
    """Counters in Redis, shared by every process and node that uses the
    same server and ``prefix``.

    redis-py (the maintained, official client) runs in a small thread pool
    of its own with a connection pool of the same size, so the reactor
    never blocks; every call has a ``timeout``.  After a failure the store
    answers "unavailable" at once for ``retry_after`` seconds instead of
    queueing logins behind a dead server; the throttle then fails open.
    ``run_blocking(call) -> Deferred`` replaces the thread pool (tests run
    the calls at once).
    """

    def __init__(
        self,
        url: str,
        prefix: str = DEFAULT_PREFIX,
        *,
        pool_size: int = 4,
        timeout: float = 1.0,
        retry_after: float = 5.0,
        reactor: Any = None,
        run_blocking: Callable[[Callable[[], Any]], Deferred[Any]] | None = None,
    ) -> None:
        import redis  # the "redis" extra: pip install 'popframe[redis]'

        self.url = url
        self.prefix = prefix
        self.retry_after = retry_after
        self._redis_errors = (redis.RedisError, OSError)
        self.client = redis.Redis.from_url(
            url,
            max_connections=pool_size,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            health_check_interval=30,
        )
        self._increment = self.client.register_script(_INCREMENT)
        # Tests pass one that runs at once.
        self._run_blocking = run_blocking or ThreadPoolRunner(
            "popframe-throttle", pool_size, reactor
        )
        self._down_until = 0.0
        self._reported: str | None = None

    def __repr__(self) -> str:
        return f"RedisThrottleStore({_redacted(self.url)!r}, prefix={self.prefix!r})"

    def _key(self, key: str) -> str:
        return self.prefix + key

    def increment(self, keys: Sequence[str], ttl: float) -> Deferred[list[int]]:
        full = [self._key(k) for k in keys]
        ms = max(1, math.ceil(ttl * 1000))
        return self._run(lambda: [int(n) for n in self._increment(keys=full, args=[ms])])

    def counts(self, keys: Sequence[str]) -> Deferred[list[int]]:
        full = [self._key(k) for k in keys]
        return self._run(lambda: [int(v or 0) for v in self.client.mget(full)])

    def reset(self, key: str) -> Deferred[None]:
        full = self._key(key)

        def delete() -> None:
            self.client.delete(full)

        return self._run(delete)

    def claim(self, key: str, ttl: float) -> Deferred[bool]:
        full = self._key(key)
        ms = max(1, math.ceil(ttl * 1000))
        return self._run(lambda: bool(self.client.set(full, b"1", px=ms, nx=True)))

    def close(self) -> None:
        self.client.close()

    # -- running redis-py off the reactor thread --------------------------------

    def _run(self, call: Callable[[], T]) -> Deferred[T]:
        if time.monotonic() < self._down_until:
            return _failed(StoreUnavailable(f"{_redacted(self.url)}: recently unreachable"))
        d = self._run_blocking(call)
        d.addCallbacks(self._up, self._down)
        return d

    def _up(self, result: T) -> T:
        if self._reported is not None:
            log.info("throttle store {url} is back", url=_redacted(self.url))
            self._reported = None
        return result

    def _down(self, failure: Failure) -> Failure:
        if failure.check(*self._redis_errors):
            self._down_until = time.monotonic() + self.retry_after
            text = str(failure.value) or type(failure.value).__name__
            if text != self._reported:
                self._reported = text
                log.error("throttle store {url}: {error}", url=_redacted(self.url), error=text)
            return Failure(StoreUnavailable(text))
        return failure


def _failed(error: Exception) -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
    d.errback(Failure(error))
    return d


def _redacted(url: str) -> str:
    """The URL without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return parts._replace(netloc=f"{user}:***@{netloc}").geturl()


def throttle_store_from_description(
    description: str, prefix: str = DEFAULT_PREFIX, clock: Any = None,
) -> IThrottleStore:
    """``memory``, or a Redis URL (``redis://host:6379/0``, ``rediss://``
    for TLS, ``unix:///run/redis.sock``), as ``--throttle-store`` takes."""
    text = description.strip()
    if text == "memory":
        return MemoryThrottleStore(clock)
    scheme = urlsplit(text).scheme
    if scheme in ("redis", "rediss", "unix"):
        try:
            return RedisThrottleStore(text, prefix, reactor=clock)
        except ImportError:
            raise ConfigurationError(
                "--throttle-store", "Redis needs the redis package: pip install 'popframe[redis]'"
            ) from None
        except ValueError as error:
            raise ConfigurationError("--throttle-store", f"{_redacted(text)}: {error}") from None
    raise ConfigurationError(
        "--throttle-store", f"{text!r}: use memory or redis://HOST:PORT/DB"
    )


# -- the policy -----------------------------------------------------------------


def address_key(peer: object) -> str | None:
    """Which counter a client address feeds: the IPv4 address, or the /64
    of an IPv6 one (one host usually owns a whole /64); all UNIX-socket
    clients share one counter."""
    if isinstance(peer, UNIXAddress):
        return "unix"
    if not isinstance(peer, (IPv4Address, IPv6Address)):
        host = getattr(peer, "host", None)
        if host is None:
            return None
    else:
        host = peer.host
    return _host_key(str(host))


@lru_cache(maxsize=4096)
def _host_key(host: str) -> str:
    """:func:`address_key` of a host string, kept: every login asks it of
    its address once or twice, and parsing is most of the cost."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with one failed login."""

    failures: int  # the largest of the address's, the user's, the connection's
    delay: float  # seconds before the -ERR
    drop: bool  # hang up after it


class Throttle:
    """The failed-login policy (see the module docstring).

    ``base`` 0 sends failures at once; ``max_auth_failures`` 0 never drops a
    connection for its own failures; ``max_ip_failures`` 0 never blocks an
    address.  When the store fails, the throttle *fails open*: the error is
    logged (once per outage, by the store) and counts read as 0, so logins
    go on; each connection's own count still delays and drops.  An outage
    of a cache must not lock every user out of their mail.
    """

    def __init__(
        self,
        store: IThrottleStore | None = None,
        *,
        base: float = 1.0,
        max_delay: float = 30.0,
        window: float = 900.0,
        max_auth_failures: int = 3,
        max_ip_failures: int = 100,
    ) -> None:
        self.store = store if store is not None else MemoryThrottleStore()
        self.base = base
        self.max_delay = max_delay
        self.window = window
        self.max_auth_failures = max_auth_failures
        self.max_ip_failures = max_ip_failures

    def __repr__(self) -> str:
        return (
            f"Throttle({self.store!r}, base={self.base}, max_delay={self.max_delay}, "
            f"window={self.window}, max_auth_failures={self.max_auth_failures}, "
            f"max_ip_failures={self.max_ip_failures})"
        )

    def delay(self, failures: int) -> float:
        if failures < 1 or self.base <= 0:
            return 0.0
        return min(self.base * 2.0 ** min(failures - 1, 60), self.max_delay)

    def blocked(self, peer: object) -> Deferred[bool]:
        """Whether ``peer``'s address reached ``max_ip_failures`` in the
        window (then logins from it are refused unchecked)."""
        key = address_key(peer)
        if not self.max_ip_failures or key is None:
            return succeed(False)
        reached = self.store.counts([_ip(key)]).addCallback(
            lambda counts: counts[0] >= self.max_ip_failures
        )
        return reached.addErrback(_fail_open, False)

    def failed(self, peer: object, user: str | None, connection_failures: int) -> Deferred[Verdict]:
        """Count a failed login; fires with what to do about it."""
        address = address_key(peer)
        keys = [_ip(address)] if address is not None else []
        if user:
            keys.append(_user(user))
        d = self.store.increment(keys, self.window) if keys else succeed([])
        d.addErrback(_fail_open, [0] * len(keys))

        def verdict(counts: list[int]) -> Verdict:
            failures = max([connection_failures, *counts])
            ip_failures = counts[0] if address is not None else 0
            drop = bool(
                (self.max_auth_failures and connection_failures >= self.max_auth_failures)
                or (self.max_ip_failures and ip_failures >= self.max_ip_failures)
            )
            return Verdict(failures, self.delay(failures), drop)

        return d.addCallback(verdict)

    def succeeded(self, user: str | None) -> Deferred[None]:
        """A login succeeded: forget the user name's failures."""
        if not user:
            return succeed(None)
        return self.store.reset(_user(user)).addErrback(_fail_open, None)


def _ip(address: str) -> str:
    return "fail:ip:" + address


def _user(user: str) -> str:
    return "fail:user:" + user


def _fail_open(failure: Failure, value: T) -> T:
    if not failure.check(StoreUnavailable):
        log.failure("throttle store failed; letting the login through", failure)
    return value


__all__ = [
    "IThrottleStore",
    "MemoryThrottleStore",
    "RedisThrottleStore",
    "StoreUnavailable",
    "Throttle",
    "TooManyFailures",
    "Verdict",
    "address_key",
    "throttle_store_from_description",
]

"""Maildrop leases with fencing, in Redis or PostgreSQL: the Maildir
store's locker when several hosts share the maildirs (NFS).

``flock`` does not reach across hosts, and a lock tied to a connection
(:mod:`popframe.db.locks`) does not say what happens to a holder that is
paused, not dead.  A lease does:

- a grant lasts ``ttl`` seconds and is renewed every ``ttl / 3`` while the
  session lives, so a node that dies (or vanishes from the network) frees
  its maildrops within ``ttl`` at most, and a released one at once;
- every grant gets a *fencing token*, larger than any earlier grant's
  (Redis: ``INCR`` on a per-maildrop counter; PostgreSQL: a sequence);
- the store calls :meth:`Lease.fence` right before it deletes (before the
  journal is written and again before the first unlink): it renews the
  lease only if this grant is still the current one, else the commit
  fails with ``LockLost`` (``-ERR [SYS/TEMP]``) and deletes nothing.  A
  node SIGSTOPped past its lease wakes up, and its QUIT finds the token
  stale (tests/test_leases.py does exactly that to a real twistd).

A shared file system cannot check a token itself, so what is left is the
time between the last check and the unlinks (microseconds, and the lease
still has a whole ``ttl`` ahead after the check): a pause exactly there is
the remaining risk, as with every lease on storage that knows no tokens.

Both servers run in a small thread pool of their own; a server that does
not answer makes opens fail with ``[SYS/TEMP]`` (never "locked" on a guess)
and commits fail the same way.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from popframe.config import ConfigurationError
from popframe.errors import LockLost, MaildropInUse, TemporaryFailure
from popframe.interfaces import IFencedLock, IMaildropLock, IMaildropLocker
from popframe.stores.locking import FileLocker
from popframe.stores.options import OptionParser, choice, positive_seconds
from popframe.threads import ThreadPoolRunner

__all__ = [
    "LOCK_DEFAULTS",
    "LOCK_OPTIONS",
    "Lease",
    "LeaseLocker",
    "PostgreSQLLeases",
    "RedisLeases",
    "locker_from_options",
    "split_lock_url",
]

log = Logger(namespace="popframe.stores.leases")

DEFAULT_TTL = 30.0
DEFAULT_PREFIX = "popframe:lease:"

#: The store options a Maildir store takes for its locker (``lock_url``
#: is split off first: it takes the rest of the string, colons included).
LOCK_OPTIONS: dict[str, OptionParser] = {
    "lock": choice("flock", "redis", "postgresql"),
    "lock_ttl": positive_seconds,
    "lock_prefix": str,
}
LOCK_DEFAULTS: dict[str, Any] = {"lock": "flock", "lock_ttl": DEFAULT_TTL,
                                 "lock_prefix": DEFAULT_PREFIX}
_URL_OPTION = ":lock_url="


class LeaseServer(Protocol):
    """Where leases live.  Every method blocks: it runs in a pool thread."""

    def grant(self, key: str, holder: str, ttl: float) -> int | None:
        """A new grant's token, or None while someone holds ``key``."""

    def renew(self, key: str, holder: str, token: int, ttl: float) -> bool:
        """Extend the grant if it is still the current one; whether it was."""

    def release(self, key: str, holder: str, token: int) -> None:
        """End the grant if it is still the current one."""


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


# -- Redis -------------------------------------------------------------------------

_GRANT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token .. ' ' .. ARGV[1], 'PX', ARGV[2])
return token
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisLeases:
    """Leases as Redis keys: ``PREFIX{digest}`` holds ``"TOKEN HOLDER"``
    with a ``PX`` expiry, ``PREFIX{digest}:fence`` the last token.  Each
    change is one Lua script, so atomic; the braces keep both keys in one
    slot of a Redis Cluster.  The holder (random per grant) in the value
    means even a token counter lost with an unpersisted Redis cannot make
    an old grant look current."""

    def __init__(self, url: str, prefix: str = DEFAULT_PREFIX, timeout: float = 2.0) -> None:
        import redis  # the "redis" extra

        self.url = url
        self.prefix = prefix
        self.errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self.client = redis.Redis.from_url(url, socket_timeout=timeout,
                                           socket_connect_timeout=timeout,
                                           health_check_interval=30)
        self._grant = self.client.register_script(_GRANT)
        self._renew = self.client.register_script(_RENEW)
        self._release = self.client.register_script(_RELEASE)

    def __repr__(self) -> str:
        return f"RedisLeases(prefix={self.prefix!r})"

    def _keys(self, key: str) -> list[str]:
        digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
        lease = f"{self.prefix}{{{digest}}}"
        return [lease, lease + ":fence"]

    def grant(self, key: str, holder: str, ttl: float) -> int | None:
        token = int(self._call(self._grant, keys=self._keys(key), args=[holder, _ms(ttl)]))
        return token or None

    def renew(self, key: str, holder: str, token: int, ttl: float) -> bool:
        return bool(self._call(self._renew, keys=self._keys(key)[:1],
                               args=[f"{token} {holder}", _ms(ttl)]))

    def release(self, key: str, holder: str, token: int) -> None:
        self._call(self._release, keys=self._keys(key)[:1], args=[f"{token} {holder}"])

    def _call(self, script: Any, **kwargs: Any) -> Any:
        try:
            return script(**kwargs)
        except self.errors as error:
            log.error("lease server {server}: {error}", server=repr(self),
                      error=str(error) or type(error).__name__)
            raise TemporaryFailure() from error


# -- PostgreSQL ----------------------------------------------------------------------

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS popframe_leases (name TEXT PRIMARY KEY, token BIGINT NOT NULL, "
    "holder TEXT NOT NULL, expires TIMESTAMPTZ NOT NULL)",
    "CREATE SEQUENCE IF NOT EXISTS popframe_lease_tokens",
)
#: Serializes the CREATE ... IF NOT EXISTS of several nodes starting at once.
_SCHEMA_LOCK = 0x706F70_6C65617365  # "pop" "lease"
_PG_GRANT = (
    "INSERT INTO popframe_leases (name, token, holder, expires) "
    "VALUES (?, nextval('popframe_lease_tokens'), ?, clock_timestamp() + ? * INTERVAL '1 ms') "
    "ON CONFLICT (name) DO UPDATE SET token = EXCLUDED.token, holder = EXCLUDED.holder, "
    "expires = EXCLUDED.expires WHERE popframe_leases.expires < clock_timestamp() "
    "RETURNING token"
)
_PG_RENEW = (
    "UPDATE popframe_leases SET expires = clock_timestamp() + ? * INTERVAL '1 ms' "
    "WHERE name = ? AND holder = ? AND token = ? AND expires > clock_timestamp()"
)
_PG_RELEASE = "DELETE FROM popframe_leases WHERE name = ? AND holder = ? AND token = ?"


class PostgreSQLLeases:
    """Leases as rows of ``popframe_leases`` (made at first use), tokens
    from the sequence ``popframe_lease_tokens``; expiry by the database's
    clock, so the nodes' clocks do not matter.  Each change is one
    statement on the process's shared pool for the URL
    (:func:`popframe.db.pool.database_for`)."""

    def __init__(self, url: str, key: str = "--store") -> None:
        from popframe.db.configured import open_database

        self.database = open_database(url, key, "maildir lock_url", own_schema=False)
        if self.database.engine.name != "postgresql":
            raise ConfigurationError(key, "maildir: lock=postgresql needs a postgresql:// "
                                     "lock_url")
        self._ready = False

    def __repr__(self) -> str:
        return f"PostgreSQLLeases({str(self.database.url)!r})"

    def _ensure_schema(self) -> None:
        def create(session: Any) -> None:
            with session.transaction():
                session.one("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK,))
                for statement in _SCHEMA:
                    session.execute(statement)

        if not self._ready:
            self.database.call(create)
            self._ready = True

    def grant(self, key: str, holder: str, ttl: float) -> int | None:
        self._ensure_schema()
        row = self.database.call(lambda s: s.one(_PG_GRANT, (key, holder, _ms(ttl))))
        return None if row is None else int(row[0])

    def renew(self, key: str, holder: str, token: int, ttl: float) -> bool:
        count = self.database.call(lambda s: s.execute(_PG_RENEW, (_ms(ttl), key, holder, token)))
        return count == 1

    def release(self, key: str, holder: str, token: int) -> None:
        self.database.call(lambda s: s.execute(_PG_RELEASE, (key, holder, token)))


# -- the locker ------------------------------------------------------------------------


@implementer(IFencedLock)
class Lease:
    """One grant, renewed every ``ttl / 3`` until released or lost."""

    def __init__(self, locker: LeaseLocker, key: str, holder: str, token: int,
                 asked: float) -> None:
        self.locker = locker
        self.key = key
        self.holder = holder
        self.token = token
        self.valid_until = asked + locker.ttl  # monotonic; the server's expiry is later
        self.lost = False
        self.released = False
        self._renewal = task.LoopingCall(self._renew)
        self._renewal.clock = locker.clock()
        self._renewal.start(locker.ttl / 3, now=False).addErrback(
            lambda failure: log.failure("lease renewal", failure))

    def __repr__(self) -> str:
        return f"<Lease {self.key!r} token={self.token}>"

    def fence(self) -> None:
        if self.released or self.lost:
            raise LockLost()
        self._renew_blocking()
        if self.lost:
            raise LockLost()

    def release(self) -> defer.Deferred[None]:
        if self.released:
            return defer.succeed(None)
        self.released = True
        if self._renewal.running:
            self._renewal.stop()
        d = self.locker.run(self.locker.server.release, self.key, self.holder, self.token)
        return d.addErrback(lambda _: None)  # it lapses by itself within ttl

    def _renew(self) -> defer.Deferred[None] | None:
        if self.released or self.lost:
            return None
        d = self.locker.run(self._renew_blocking)

        def renewed(_: None) -> None:
            if self.lost and self._renewal.running:
                self._renewal.stop()

        # A server that cannot answer: keep trying; the lease lapses if it
        # stays away, and fence() then refuses the commit.
        return d.addCallbacks(renewed, lambda _: None)

    def _renew_blocking(self) -> None:
        asked = time.monotonic()
        if self.locker.server.renew(self.key, self.holder, self.token, self.locker.ttl):
            self.valid_until = asked + self.locker.ttl
        elif not self.lost:
            self.lost = True
            log.warn("maildrop lease {key!r} (token {token}) was lost; that session cannot "
                     "delete", key=self.key, token=self.token)


@implementer(IMaildropLocker)
class LeaseLocker:
    """:class:`~popframe.interfaces.IMaildropLocker` over a
    :class:`LeaseServer`: ``acquire`` fires with a :class:`Lease`, or
    fails with ``MaildropInUse`` (held) or ``TemporaryFailure`` (the
    server cannot answer)."""

    def __init__(self, server: LeaseServer, ttl: float = DEFAULT_TTL, reactor: Any = None,
                 run_blocking: Callable[..., defer.Deferred[Any]] | None = None) -> None:
        self.server = server
        self.ttl = ttl
        self._reactor = reactor
        self.run = run_blocking or ThreadPoolRunner("popframe-leases", 4, reactor)

    def __repr__(self) -> str:
        return f"LeaseLocker({self.server!r}, ttl={self.ttl:g})"

    def clock(self) -> Any:
        if self._reactor is None:
            from twisted.internet import reactor  # not at import: twistd picks it later

            self._reactor = reactor
        return self._reactor

    def acquire(self, key: str) -> defer.Deferred[IMaildropLock]:
        holder = f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        asked = time.monotonic()

        def granted(token: int | None) -> IMaildropLock:
            if token is None:
                raise MaildropInUse()
            return Lease(self, key, holder, token, asked)

        def failed(failure: Failure) -> Failure:
            if not failure.check(TemporaryFailure):
                log.failure("maildrop lease {key!r}", failure, key=key)
                return Failure(TemporaryFailure())
            return failure

        d: defer.Deferred[int | None] = self.run(self.server.grant, key, holder, self.ttl)
        return d.addCallbacks(granted, failed)


# -- the Maildir store's options ---------------------------------------------------------


def split_lock_url(argstring: str) -> tuple[str, str | None]:
    """``(the rest, URL)`` of a store string ending ``:lock_url=URL``: the
    URL takes the rest of the string, colons included (as ``dsn=`` does
    for the SQL store), so it must be the last option."""
    rest, found, url = argstring.partition(_URL_OPTION)
    return (rest, url) if found else (argstring, None)


def locker_from_options(values: dict[str, Any], url: str | None,
                        key: str = "--store") -> IMaildropLocker:
    """The locker that ``lock=``, ``lock_ttl=``, ``lock_prefix=`` and
    ``lock_url=`` name (``flock``: :class:`FileLocker`, one host)."""
    kind = values["lock"]
    if kind == "flock":
        if url is not None:
            raise ConfigurationError(key, "maildir: lock_url needs lock=redis or "
                                     "lock=postgresql")
        return FileLocker()
    if url is None:
        example = ("redis://127.0.0.1:6379/0" if kind == "redis"
                   else "postgresql://popframe@127.0.0.1:5432/mail")
        raise ConfigurationError(key, f"maildir: lock={kind} needs lock_url=URL as the last "
                                 f"option, e.g. lock_url={example}")
    server: LeaseServer
    if kind == "redis":
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigurationError(key, f"maildir: lock=redis needs a redis://, rediss:// or "
                                     f"unix:// lock_url, not {url.partition(':')[0]}:")
        server = RedisLeases(url, values["lock_prefix"])
    else:
        server = PostgreSQLLeases(url, key)
    return LeaseLocker(server, values["lock_ttl"])

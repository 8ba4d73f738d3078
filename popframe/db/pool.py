"""The connection pool: blocking driver calls in threads of its own, one
autocommit connection per running call, and failures as
``TemporaryFailure``.

Why a pool of our own and not ``twisted.enterprise.adbapi``: measured with
``benchmarks/sql_pools.py`` (docs/sql.md), it serves 1.2-1.9x the lookups
per second at 0.5-0.8x the CPU, because a lookup is one round trip on an
autocommit connection and connections are not tied to threads; and it
decides itself what a failure means:

- a connection a failure left unusable (server restart, network, a
  timeout) is closed, never handed out again;
- a call whose *first* statement failed that way on a connection that had
  been idle (the stale connection after a database restart) is run again
  once on a new connection: nothing of it ran;
- anything else fails the call with :class:`DatabaseError`, a
  ``TemporaryFailure`` (``-ERR [SYS/TEMP]``), logged once per outage, not
  once per query;
- a read-only call that has not finished ``connect_timeout + timeout``
  seconds after it started fails then (:meth:`Database.run`), even if the
  server hangs without closing: the thread finishes on its own later.
  Writes are not abandoned that way (a client must not be told a commit
  failed that then happens); the server's statement timeout bounds them.

One :class:`Database` per URL per process (:func:`database_for`): the SQL
checker, store, locker and the CLI share it.
"""

from __future__ import annotations

import functools
import ipaddress
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from popframe.db.engines import Engine, engine_for, placeholders
from popframe.db.url import DatabaseURL
from popframe.errors import TemporaryFailure
from popframe.threads import ThreadPoolRunner

if TYPE_CHECKING:
    from popframe.db import pq

__all__ = ["Database", "DatabaseError", "Rows", "Session", "database_for"]

T = TypeVar("T")
log = Logger(namespace="popframe.db")

#: A connection attempt that failed after this many seconds (a server
#: that does not answer) stops others for RETRY_AFTER seconds.
SLOW_FAILURE = 0.5
RETRY_AFTER = 1.0


class Rows(list[tuple[Any, ...]]):
    """A statement's rows, and its column names (:meth:`Database.query`)."""

    columns: tuple[str, ...] = ()


class DatabaseError(TemporaryFailure):
    """The database could not do what was asked now (down, restarting, a
    timeout, a missing table): logged, answered ``[SYS/TEMP]``."""


class Session:
    """A connection lent to one call, in a pool thread.  SQL uses ``?``
    placeholders and parameters only, never values in the text."""

    def __init__(self, engine: Engine, connection: Any) -> None:
        self.engine = engine
        self.connection = connection
        self.cursor = engine.cursor(connection)
        self.statements = 0  # run successfully in this call

    def execute(self, text: str, params: tuple[Any, ...] | list[Any] = ()) -> int:
        self.cursor.execute(self.engine.sql(text), tuple(params))
        self.statements += 1
        return int(self.cursor.rowcount)

    def query(self, text: str, params: tuple[Any, ...] | list[Any] = ()) -> list[tuple[Any, ...]]:
        self.cursor.execute(self.engine.sql(text), tuple(params))
        rows = list(self.cursor.fetchall())
        self.statements += 1
        return rows

    def one(self, text: str, params: tuple[Any, ...] | list[Any] = ()) -> tuple[Any, ...] | None:
        rows = self.query(text, params)
        return rows[0] if rows else None

    def insert_id(self, text: str, params: tuple[Any, ...] = ()) -> int:
        new_id = self.engine.insert_id(self.cursor, text, params)
        self.statements += 1
        return new_id

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """BEGIN ... COMMIT, or ROLLBACK if the block raises."""
        self.engine.begin(self.cursor)
        try:
            yield self
        except BaseException:
            try:
                self.cursor.execute("ROLLBACK")
            except Exception:  # the connection is gone: the server rolled back
                pass
            raise
        self.cursor.execute("COMMIT")
        self.statements += 1

    def close(self) -> None:
        try:
            self.cursor.close()
        except Exception:
            pass


class Database:
    """A pool of ``url.pool`` connections, used from ``url.pool`` threads."""

    def __init__(self, url: DatabaseURL, reactor: Any = None) -> None:
        self.url = url
        self.engine = engine_for(url)
        self._reactor = reactor
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._runner = ThreadPoolRunner("popframe-db", url.pool, reactor)
        self._failing = False  # an outage is being logged
        self._down_until = 0.0  # no new connection tried before (monotonic)
        self._pipelined: pq.PipelinedPool | None = None  # PostgreSQL's connections on the reactor
        if self.engine.name == "postgresql":  # psycopg is there: the engine needs it
            from popframe.db import pq

            self._pq = pq
            # Many statements share a connection: half the pool is plenty.
            self._pipelined = pq.PipelinedPool(self._connect_pipelined, max(1, url.pool // 2))

    # -- from the reactor ------------------------------------------------------------

    def run(self, function: Callable[..., T], *args: Any, write: bool = False) -> defer.Deferred[T]:
        """``function(session, *args)`` in a pool thread.  Fails with
        :class:`DatabaseError` (or what ``function`` raised).  A read
        (``write=False``) also fails once ``connect_timeout + timeout``
        seconds have passed."""
        d = self._runner(self.call, function, *args)
        if not write:
            d.addTimeout(self.url.connect_timeout + self.url.timeout + 0.5, self._get_reactor(),
                         onTimeoutCancel=self._timed_out)
        return d

    def in_thread(self, function: Callable[..., T], *args: Any) -> defer.Deferred[T]:
        """``function(*args)`` in one of the pool's threads, with no
        connection lent (it may call :meth:`call` itself)."""
        return self._runner(function, *args)

    def _timed_out(self, result: object, timeout: float) -> object:
        if isinstance(result, Failure) and result.check(defer.CancelledError):
            self._report(f"no answer within {timeout:g} s")
            raise DatabaseError()
        return result

    def _get_reactor(self) -> Any:
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
            # Say goodbye to the server rather than vanish (its log stays quiet).
            reactor.addSystemEventTrigger("after", "shutdown", self.close)
        return self._reactor

    def query(self, text: str, params: Sequence[Any] = ()) -> defer.Deferred[Rows]:
        """The rows (and column names) of one read-only statement, with
        ``?`` placeholders.  PostgreSQL answers on the reactor thread
        (:mod:`popframe.db.pq`: no thread hand-off, the cheapest way to a
        row); the other engines in a pool thread.  Fails as :meth:`run`
        does, a read's deadline included; a statement whose connection
        broke (a database restart) is sent once more on a new one."""
        if self._pipelined is None:
            d = self.run(_rows, text, tuple(params))
        else:
            statement = numbered_statement(text)
            d = self._pipelined.query(statement, params).addCallbacks(
                self._pipelined_answered, self._pipelined_failed, errbackArgs=(statement, params))
            d.addTimeout(self.url.connect_timeout + self.url.timeout + 0.5, self._get_reactor(),
                         onTimeoutCancel=self._timed_out)
        return d

    def _pipelined_failed(self, failure: Failure, statement: bytes, params: Sequence[Any],
                          again: bool = True) -> defer.Deferred[Rows]:
        pq = self._pq
        if failure.check(pq.ConnectionGone) and again and self._pipelined is not None:
            return self._pipelined.query(statement, params).addCallbacks(
                self._pipelined_answered, self._pipelined_failed,
                errbackArgs=(statement, params, False))
        if failure.check(pq.ConnectionGone, pq.QueryFailed):
            self._report(str(failure.value))
            raise DatabaseError() from failure.value
        return failure  # type: ignore[return-value]

    def _pipelined_answered(self, rows: Rows) -> Rows:
        if self._failing:
            self._failing = False
            log.info("database {url}: available again", url=str(self.url))
        return rows

    def _connect_pipelined(self) -> defer.Deferred[pq.PipelinedConnection]:
        """A connection for :mod:`popframe.db.pq`, with :meth:`connect`'s
        rule for a server that does not answer."""
        started = time.monotonic()
        if started < self._down_until:
            return defer.fail(DatabaseError())
        reactor = self._get_reactor()

        def connect(address: str | None) -> defer.Deferred[pq.PipelinedConnection]:
            try:
                conninfo = self.engine.conninfo(address)  # type: ignore[attr-defined]
            except OSError as error:  # a password_file that cannot be read
                self._report(f"cannot connect: {error}")
                raise DatabaseError() from error
            return self._pq.connect(reactor, conninfo, self.url.connect_timeout)

        def failed(failure: Failure) -> Failure:
            now = time.monotonic()
            if now - started > SLOW_FAILURE:
                self._down_until = now + RETRY_AFTER
            if failure.check(OSError):  # the name did not resolve
                self._report(f"cannot connect: {failure.value}")
                raise DatabaseError() from failure.value
            return failure

        host = self.url.host
        if self.url.socket is not None or host is None or _is_address(host):
            d = defer.maybeDeferred(connect, None)
        else:  # libpq would resolve the name itself, blocking the reactor
            d = reactor.resolve(host).addCallback(connect)
        return d.addErrback(failed)

    # -- blocking (pool threads, the CLI) --------------------------------------------

    def call(self, function: Callable[..., T], *args: Any) -> T:
        """Run ``function(session, *args)`` here, blocking."""
        errors = self.engine.driver_errors()
        for attempt in (1, 2):
            connection, fresh = self._checkout()
            session = Session(self.engine, connection)
            try:
                result = function(session, *args)
            except errors as error:
                session.close()
                if self.engine.is_gone(connection, error):
                    self._discard(connection)
                    if attempt == 1 and not fresh and session.statements == 0:
                        continue  # a stale connection: nothing of the call ran
                else:
                    self._checkin(connection)
                self._report(f"{type(error).__name__}: {error}".strip())
                raise DatabaseError() from error
            except BaseException:
                session.close()
                self._checkin(connection)
                raise
            session.close()
            self._checkin(connection)
            if self._failing:
                self._failing = False
                log.info("database {url}: available again", url=str(self.url))
            return result
        raise AssertionError("unreachable")

    def _checkout(self) -> tuple[Any, bool]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), False
        return self.connect(), True

    def connect(self) -> Any:
        """A new connection.  After an attempt that failed slowly (a
        server that does not answer: ``connect_timeout``), calls in the
        next :data:`RETRY_AFTER` seconds fail at once instead of each
        waiting as long; a refused connection fails fast by itself."""
        started = time.monotonic()
        if started < self._down_until:
            raise DatabaseError()
        errors: tuple[type[BaseException], ...] = (*self.engine.driver_errors(), OSError)
        try:
            return self.engine.connect()
        except errors as error:  # OSError: a password_file that cannot be read
            now = time.monotonic()
            if now - started > SLOW_FAILURE:
                self._down_until = now + RETRY_AFTER
            self._report(f"cannot connect: {error}".strip())
            raise DatabaseError() from error

    def _checkin(self, connection: Any) -> None:
        with self._lock:
            self._idle.append(connection)

    def _discard(self, connection: Any) -> None:
        try:
            connection.close()
        except Exception:
            pass

    def _report(self, problem: str) -> None:
        """Log a failure; while the database stays down, once."""
        if not self._failing:
            log.error("database {url}: {problem}", url=str(self.url), problem=problem)
        self._failing = True

    def close(self) -> None:
        """Close the idle connections (at shutdown, and in tests)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            self._discard(connection)
        if self._pipelined is not None:
            self._pipelined.close()


def _rows(session: Session, text: str, params: tuple[Any, ...]) -> Rows:
    """:meth:`Database.query` in a pool thread."""
    cursor = session.cursor
    cursor.execute(session.engine.sql(text), params)
    rows = Rows(cursor.fetchall())
    rows.columns = tuple(str(column[0]).lower() for column in cursor.description or ())
    session.statements += 1
    return rows


@functools.lru_cache(maxsize=512)
def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=512)
def numbered_statement(text: str) -> bytes:
    """popframe's ``?`` placeholders as PostgreSQL's ``$1, $2, ...`` (for
    :mod:`popframe.db.pq`'s connections); remembered, as the engines'
    own forms are (a drain sends the same few statements again and again)."""
    return placeholders(text, lambda n: f"${n}").encode()


_DATABASES: dict[tuple[object, ...], Database] = {}
_DATABASES_LOCK = threading.Lock()


def database_for(url: DatabaseURL) -> Database:
    """The process's one :class:`Database` for ``url`` (same engine, host,
    port, user and database): the checker and the store share it."""
    with _DATABASES_LOCK:
        database = _DATABASES.get(url.key())
        if database is None:
            database = _DATABASES[url.key()] = Database(url)
        return database

"""Maildrop locks that hold across processes and hosts sharing a database
(:class:`~popframe.interfaces.IMaildropLocker`), so the cluster work can
use them without the SQL store.

- PostgreSQL: a session-level advisory lock (``pg_try_advisory_lock`` on a
  64-bit hash of the maildrop name); MariaDB: ``GET_LOCK(name, 0)`` on a
  hash of the database and maildrop names (its locks are server-wide).
  Both belong to one connection of the process, the *lock connection*,
  which holds every lock the process holds; the pool's threads use it in
  turn, one short statement each.  When the process dies, even
  by SIGKILL, the kernel closes that connection and the server drops its
  locks at once (measured: docs/sql.md).  When a host vanishes without
  closing, the server notices by TCP keepalive (PostgreSQL: 10 s idle, 3
  probes 5 s apart, set on the lock connection) or, for MariaDB, by
  ``wait_timeout`` (60 s on the lock connection, which pings every 20 s
  while it lives).
- Both kinds of lock count per connection, so one process could take one
  name twice: the locker also keeps the names it holds and refuses a
  second session of its own process without asking the server.
- If the lock connection breaks (a database restart), the next use makes a
  new one and takes the held names again; a name someone else took
  meanwhile is lost.  Deletions check in their own transaction that the
  lock connection still holds the name (:meth:`DatabaseLock.verify`), so
  a session whose lock lapsed never deletes anything.
- SQLite: ``flock`` on one lock file per maildrop in ``DB-FILE.locks/``
  (:class:`~popframe.stores.locking.FileLocker`): across the processes of
  one host, which is as far as a SQLite file is shared.
"""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Any

from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from popframe.db.pool import Database, DatabaseError, Rows, Session, numbered_statement
from popframe.errors import LockLost, MaildropInUse, TemporaryFailure
from popframe.interfaces import IMaildropLock, IMaildropLocker
from popframe.stores.locking import FileLock, FileLocker

__all__ = ["DatabaseLock", "DatabaseLocker", "LockLost", "ReactorLocker", "locker_for"]

log = Logger(namespace="popframe.db")

#: Seconds between pings of the lock connection.
PING_INTERVAL = 20.0


@implementer(IMaildropLock)
class DatabaseLock:
    def __init__(self, locker: DatabaseLocker, key: str, token: Any) -> None:
        self.locker = locker
        self.key = key
        self.token = token  # the engine's lock id (a bigint, or a GET_LOCK name)

    def release(self) -> defer.Deferred[None]:
        """Idempotent: a second call finds the name no longer held."""
        return self.locker._release(self).addErrback(lambda _: None)

    def verify(self, session: Session) -> None:
        """In a deletion's transaction, on another connection: raise
        :class:`LockLost` unless the lock connection still holds the lock."""
        ident = self.locker._ident
        if ident is None or not self.locker._held_by(session, self.token, ident):
            raise LockLost()


@implementer(IMaildropLocker)
class DatabaseLocker:
    """Advisory locks (PostgreSQL) or ``GET_LOCK`` (MariaDB) on one lock
    connection, which any of the database's pool threads uses in turn
    (a mutex, held for one short statement): so the SQL store takes the
    lock and lists the maildrop in one thread hand-off."""

    def __init__(self, database: Database, reactor: Any = None) -> None:
        if database.engine.name not in ("postgresql", "mysql"):
            raise ValueError("DatabaseLocker serves PostgreSQL and MariaDB")
        self.database = database
        self.engine = database.engine
        self._reactor = reactor
        self._mutex = threading.Lock()  # guards all below
        self._held: dict[str, DatabaseLock] = {}
        self._connection: Any = None
        self._ident: Any = None  # the lock connection's backend pid / connection id
        self._pinger: task.LoopingCall | None = None

    # -- names ---------------------------------------------------------------------

    def token(self, key: str) -> Any:
        digest = hashlib.blake2b(
            f"{self.database.url.database}\0{key}".encode("utf-8", "surrogatepass"),
            digest_size=16, person=b"popframe-lock").digest()
        if self.engine.name == "postgresql":
            return int.from_bytes(digest[:8], "big", signed=True)
        return "popframe:" + digest.hex()  # 41 characters; GET_LOCK allows 64

    # -- IMaildropLocker (reactor thread) -------------------------------------------

    def acquire(self, key: str) -> defer.Deferred[IMaildropLock]:
        self.start_pinging()
        return self.database.in_thread(self.acquire_blocking, key)

    def _release(self, lock: DatabaseLock) -> defer.Deferred[None]:
        """Fires once the name is free for everyone (so a client that QUITs
        and logs in again through another node is not told [IN-USE])."""
        return self.database.in_thread(self.release_blocking, lock)

    def start_pinging(self) -> None:
        """Keep the lock connection alive (MariaDB's wait_timeout) and find
        a broken one early; from the reactor thread, once."""
        if self._pinger is None:
            self._pinger = task.LoopingCall(
                lambda: self.database.in_thread(self._ping).addErrback(lambda _: None))
            if self._reactor is not None:
                self._pinger.clock = self._reactor
            self._pinger.start(PING_INTERVAL, now=False).addErrback(lambda _: None)

    # -- blocking: any pool thread ---------------------------------------------------

    def acquire_blocking(self, key: str) -> DatabaseLock:
        """Take the lock now, or raise ``MaildropInUse`` (or
        ``DatabaseError``)."""
        token = self.token(key)
        with self._mutex:
            if key in self._held:
                raise MaildropInUse()
            if not self._with_connection(self._try_lock, token):
                raise MaildropInUse()
            lock = self._held[key] = DatabaseLock(self, key, token)
            return lock

    def release_blocking(self, lock: DatabaseLock) -> None:
        with self._mutex:
            if self._held.get(lock.key) is not lock:
                return
            del self._held[lock.key]
            if self._connection is None:
                return  # the connection broke: the server dropped the lock with it
            try:
                self._with_connection(self._unlock, lock.token, reconnect=False)
            except DatabaseError:
                log.warn("releasing maildrop lock {key!r} failed (it is freed with the lock "
                         "connection)", key=lock.key)

    def _ping(self) -> None:
        with self._mutex:
            if self._connection is not None or self._held:
                self._with_connection(lambda cursor: cursor.execute("SELECT 1"))

    def _with_connection(self, work: Any, *args: Any, reconnect: bool = True) -> Any:
        errors = self.engine.driver_errors()
        for attempt in (1, 2):
            fresh = self._connection is None
            if fresh:
                if not reconnect:
                    return None
                self._connect()
            cursor = self._connection.cursor()
            try:
                return work(cursor, *args)
            except errors as error:
                if self.engine.is_gone(self._connection, error):
                    self._drop()
                    if attempt == 1 and not fresh:
                        continue
                log.error("database {url}: lock connection: {error}", url=str(self.database.url),
                          error=error)
                raise DatabaseError() from error
            finally:
                try:
                    cursor.close()
                except Exception:
                    pass
        raise AssertionError("unreachable")

    def _connect(self) -> None:
        connection = self.database.connect()  # DatabaseError when it cannot
        try:
            cursor = connection.cursor()
            if self.engine.name == "postgresql":
                # The server notices a vanished host (no FIN) in ~25 s.
                cursor.execute("SET tcp_keepalives_idle = 10")
                cursor.execute("SET tcp_keepalives_interval = 5")
                cursor.execute("SET tcp_keepalives_count = 3")
                cursor.execute("SELECT pg_backend_pid()")
            else:
                cursor.execute("SET SESSION wait_timeout = 60")
                cursor.execute("SELECT CONNECTION_ID()")
            ident = cursor.fetchone()[0]
        except self.engine.driver_errors() as error:
            connection.close()
            log.error("database {url}: cannot set up the lock connection: {error}",
                      url=str(self.database.url), error=error)
            raise DatabaseError() from error
        self._connection, self._ident = connection, ident
        # Take again what this process held on the connection that broke.
        for key, lock in list(self._held.items()):
            try:
                taken = self._try_lock(cursor, lock.token)
            except self.engine.driver_errors():
                taken = False
            if not taken:
                log.warn("maildrop lock {key!r} lapsed while the lock connection was down; "
                         "that session cannot delete", key=key)
        cursor.close()

    def drop_connection(self) -> None:
        """Forget the lock connection as if it broke (tests, failover drills):
        the held names lapse unless the next use takes them again."""
        with self._mutex:
            self._drop()

    def _drop(self) -> None:
        connection, self._connection, self._ident = self._connection, None, None
        try:
            connection.close()
        except Exception:
            pass

    def _try_lock(self, cursor: Any, token: Any) -> bool:
        if self.engine.name == "postgresql":
            cursor.execute("SELECT pg_try_advisory_lock(%s)", (token,))
        else:
            cursor.execute("SELECT GET_LOCK(%s, 0)", (token,))
        return bool(cursor.fetchone()[0])

    def _unlock(self, cursor: Any, token: Any) -> None:
        if self.engine.name == "postgresql":
            cursor.execute("SELECT pg_advisory_unlock(%s)", (token,))
        else:
            cursor.execute("SELECT RELEASE_LOCK(%s)", (token,))
        cursor.fetchone()

    # -- verification (a pool thread, in a deletion's transaction) ---------------------

    def _held_by(self, session: Session, token: Any, ident: Any) -> bool:
        if self.engine.name == "postgresql":
            unsigned = token & 0xFFFFFFFFFFFFFFFF
            row = session.one(
                "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = ? "
                "AND classid::bigint = ? AND objid::bigint = ? AND objsubid = 1",
                (ident, unsigned >> 32, unsigned & 0xFFFFFFFF))
            return row is not None
        row = session.one("SELECT IS_USED_LOCK(?)", (token,))
        return row is not None and row[0] == ident


class ReactorLocker(DatabaseLocker):
    """PostgreSQL's advisory locks with the lock connection on the reactor
    (:mod:`popframe.db.pq`): taking or releasing a lock is one statement,
    no thread hand-off (a login used to pay two).  The same rules as
    :class:`DatabaseLocker`: one lock connection holds every lock of the
    process, the names held are kept here too (a second session of this
    process is refused without asking), a broken connection is made
    again at the next use and the held names taken again, and
    :meth:`DatabaseLock.verify` checks in a deletion's transaction that
    the lock is still held.  All of it runs on the reactor thread."""

    def __init__(self, database: Database, reactor: Any = None) -> None:
        if database.engine.name != "postgresql":
            raise ValueError("ReactorLocker serves PostgreSQL")
        super().__init__(database, reactor)
        from popframe.db import pq  # psycopg: PostgreSQL only

        self._pq = pq
        self._taking: set[str] = set()  # names being asked for
        self._lock_connection: Any = None  # a pq.PipelinedConnection
        self._connecting: defer.Deferred[Any] | None = None
        self._waiting: list[defer.Deferred[Any]] = []

    # -- IMaildropLocker ---------------------------------------------------------------

    def acquire(self, key: str) -> defer.Deferred[IMaildropLock]:
        self.start_pinging()
        if key in self._held or key in self._taking:
            return defer.fail(MaildropInUse())
        token = self.token(key)
        self._taking.add(key)

        def taken(rows: list[tuple[Any, ...]]) -> IMaildropLock:
            if not rows or not rows[0][0]:
                raise MaildropInUse()
            lock = self._held[key] = DatabaseLock(self, key, token)
            return lock

        def done(result: Any) -> Any:
            self._taking.discard(key)
            return result

        d = self._statement(b"SELECT pg_try_advisory_lock($1)", (token,))
        return d.addCallback(taken).addBoth(done)

    def acquire_and_read(self, key: str, text: str, params: tuple[Any, ...]
                         ) -> defer.Deferred[tuple[IMaildropLock, Rows]]:
        """:meth:`acquire`, then the rows of a read (``?`` placeholders)
        run under the lock: both sent at once on the lock connection,
        where the server runs them in turn, so the read sees what the
        last holder committed and the open costs one round trip.  A
        read that fails releases the lock."""
        connection = self._lock_connection
        if connection is None or connection.broken or key in self._held or \
                key in self._taking:
            return self.acquire(key).addCallback(self._read_under, key, text, params)
        self.start_pinging()
        token = self.token(key)
        self._taking.add(key)
        locked = connection.query(b"SELECT pg_try_advisory_lock($1)", (token,))
        read = connection.query(numbered_statement(text), params)
        outcome: defer.Deferred[tuple[IMaildropLock, Rows]] = defer.Deferred()

        def taken(rows: Rows) -> None:
            self._taking.discard(key)
            if not rows or not rows[0][0]:
                read.addErrback(lambda _: None)
                outcome.errback(MaildropInUse())
                return
            lock = self._held[key] = DatabaseLock(self, key, token)
            read.addCallbacks(lambda listed: outcome.callback((lock, listed)),
                              lambda failure: self._read_failed(failure, lock, outcome))

        def not_taken(failure: Failure) -> None:
            self._taking.discard(key)
            read.addErrback(lambda _: None)
            if failure.check(self._pq.ConnectionGone):  # broken since its last use: anew
                self._lock_connection = None
                again = self.acquire(key).addCallback(self._read_under, key, text, params)
                again.chainDeferred(outcome)
                return
            try:
                self._failed(failure)
            except BaseException:
                outcome.errback()
            else:
                outcome.errback(failure)

        locked.addCallbacks(taken, not_taken)
        return outcome

    def _read_under(self, lock: IMaildropLock, key: str, text: str, params: tuple[Any, ...]
                    ) -> defer.Deferred[tuple[IMaildropLock, Rows]]:
        d = self._statement(numbered_statement(text), params)
        outcome: defer.Deferred[tuple[IMaildropLock, Rows]] = defer.Deferred()
        d.addCallbacks(lambda rows: outcome.callback((lock, rows)),
                       lambda failure: self._read_failed(failure, lock, outcome))
        return outcome

    def _read_failed(self, failure: Failure, lock: IMaildropLock,
                     outcome: defer.Deferred[Any]) -> None:
        released: defer.Deferred[None] = lock.release()
        try:
            self._failed(failure)
        except BaseException:
            failure = Failure()
        released.addBoth(lambda _: outcome.errback(failure))

    def _release(self, lock: DatabaseLock) -> defer.Deferred[None]:
        if self._held.get(lock.key) is not lock:
            return defer.succeed(None)
        del self._held[lock.key]
        connection = self._lock_connection
        if connection is None or connection.broken:
            return defer.succeed(None)  # the server dropped the lock with the connection

        def failed(failure: Failure) -> None:
            log.warn("releasing maildrop lock {key!r} failed (it is freed with the lock "
                     "connection)", key=lock.key)

        d = connection.query(b"SELECT pg_advisory_unlock($1)", (lock.token,))
        return d.addCallbacks(lambda _: None, failed)

    def start_pinging(self) -> None:
        if self._pinger is None:
            self._pinger = task.LoopingCall(self._ping_now)
            if self._reactor is not None:
                self._pinger.clock = self._reactor
            self._pinger.start(PING_INTERVAL, now=False).addErrback(lambda _: None)

    def _ping_now(self) -> None:
        if self._lock_connection is not None or self._held:
            self._statement(b"SELECT 1", ()).addErrback(lambda _: None)

    def drop_connection(self) -> None:
        connection, self._lock_connection, self._ident = self._lock_connection, None, None
        if connection is not None:
            connection.close()

    # -- the lock connection -----------------------------------------------------------

    def _statement(self, text: bytes, params: tuple[Any, ...]) -> defer.Deferred[Any]:
        """``text`` on the lock connection, made first if there is none; a
        connection that broke since its last use is made again and the
        statement sent once more."""
        connection = self._lock_connection
        if connection is not None and not connection.broken:
            d = connection.query(text, params)
            return d.addErrback(self._again, text, params)
        return self._connected().addCallback(lambda c: c.query(text, params)).addErrback(
            self._failed)

    def _again(self, failure: Failure, text: bytes, params: tuple[Any, ...]) -> Any:
        if failure.check(self._pq.ConnectionGone):
            self._lock_connection = None
            return self._connected().addCallback(lambda c: c.query(text, params)).addErrback(
                self._failed)
        return self._failed(failure)

    def _failed(self, failure: Failure) -> Failure:
        if failure.check(self._pq.ConnectionGone, self._pq.QueryFailed):
            log.error("database {url}: lock connection: {error}", url=str(self.database.url),
                      error=failure.value)
            raise DatabaseError() from failure.value
        return failure

    def _connected(self) -> defer.Deferred[Any]:
        """The lock connection, made (once, whoever asks meanwhile) with
        its keepalives, its backend pid known and the held names taken
        again."""
        waiting: defer.Deferred[Any] = defer.Deferred()
        self._waiting.append(waiting)
        if self._connecting is None:
            self._connecting = self.database._connect_pipelined()
            self._connecting.addCallback(
                lambda connection: defer.Deferred.fromCoroutine(self._set_up(connection)))
            self._connecting.addBoth(self._made)
        return waiting

    async def _set_up(self, connection: Any) -> Any:
        try:
            for setting in (b"SET tcp_keepalives_idle = 10", b"SET tcp_keepalives_interval = 5",
                            b"SET tcp_keepalives_count = 3"):
                await connection.query(setting)
            ident = (await connection.query(b"SELECT pg_backend_pid()"))[0][0]
        except BaseException:
            connection.close()
            raise
        self._lock_connection, self._ident = connection, ident
        # Take again what this process held on the connection that broke.
        for key, lock in list(self._held.items()):
            try:
                rows = await connection.query(b"SELECT pg_try_advisory_lock($1)", (lock.token,))
                taken = bool(rows[0][0])
            except Exception:
                taken = False
            if not taken:
                log.warn("maildrop lock {key!r} lapsed while the lock connection was down; "
                         "that session cannot delete", key=key)
        return connection

    def _made(self, result: Any) -> None:
        self._connecting = None
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)


def locker_for(database: Database) -> IMaildropLocker:
    """The locker that suits ``database``'s engine."""
    if database.engine.name == "sqlite":
        return SQLiteLocker(database.url.database)
    if database.engine.name == "postgresql":
        return ReactorLocker(database)
    return DatabaseLocker(database)


@implementer(IMaildropLocker)
class SQLiteLocker(FileLocker):
    """``flock`` on ``DB-FILE.locks/HASH``: one host's processes."""

    def __init__(self, database_path: str) -> None:
        super().__init__()
        self.directory = database_path + ".locks"

    def acquire(self, key: str) -> defer.Deferred[IMaildropLock]:
        try:
            return defer.succeed(self.acquire_blocking(key))
        except (MaildropInUse, TemporaryFailure):
            return defer.fail()

    def acquire_blocking(self, key: str) -> FileLock:
        """Take the lock now (a few system calls), or raise ``MaildropInUse``."""
        name = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
        except OSError as error:
            log.error("cannot make {path}: {error}", path=self.directory, error=error)
            raise TemporaryFailure() from error
        return self.acquire_now(os.path.join(self.directory, name))

    def release_blocking(self, lock: FileLock) -> None:
        lock.release()

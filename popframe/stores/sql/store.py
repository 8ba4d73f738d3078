"""The SQL store: maildrops and messages in SQLite, PostgreSQL or MariaDB
(``--store sql:dsn=URL``).

- Open: the maildrop lock (:mod:`popframe.db.locks`: across hosts on
  PostgreSQL and MariaDB, across processes on SQLite), then one query of
  the listing index: ids, uids, RETR sizes and wire-ready flags, no body;
  both in one thread hand-off.
- RETR: the first RETR of a message not read yet reads part 0 of it and
  of the messages after it in the listing, up to :data:`READ_AHEAD`
  octets (512 KiB) or 64 messages, in one query; serving a message then
  starts reading the next such batch in the background, so a client
  retrieving in order (as POP3 clients do) finds each message in memory
  and a query per 3 KB message is not paid (docs/sql.md has the
  numbers).  A one-part message (up to 256 KiB: almost all mail) is
  served as a file in memory (no Deferred per chunk); a longer one as an
  :class:`SQLMessageBody`, which reads its further parts one query each,
  the next while the current one is sent.  A session holds about two
  batches at most (it forgets what a client skipping about left behind)
  and, per message, two parts.
- QUIT: the deletions in one transaction, which first checks that the
  lock is still this session's.
- Delivery (``IDeliverableStore``): the message written a part at a time
  in one transaction, committed before the Deferred fires.

A maildrop is named by the user, or by the ``maildrop`` a checker gave
(:class:`~popframe.interfaces.UserSettings`); mail for it lives in rows
with that name, so users may share one.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Sequence
from typing import BinaryIO

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from popframe.db import Database, Session, configured_database
from popframe.db.locks import DatabaseLocker, ReactorLocker, SQLiteLocker, locker_for
from popframe.db.migrations import PART_SIZE
from popframe.errors import NoSuchMessage, PermanentFailure
from popframe.interfaces import (
    IDeliverableStore,
    IExpiringMaildrop,
    IImportingStore,
    IListableStore,
    IMaildrop,
    IMaildropLock,
    IMaildropLocker,
    IMaildropStoreFactory,
    IMessageBody,
    MessageList,
    UserSettings,
    valid_uid,
)
from popframe.stores.base import LockedMaildrop
from popframe.stores.maildir import MessageVanished
from popframe.stores.options import DELE_DEFAULT, DELE_OPTION, parse_store_options, split_options
from popframe.stores.sql.queries import (
    Listing,
    delete_messages,
    hide_messages,
    list_maildrop,
    listing_of,
    listing_query,
    maildrop_names,
    read_first_parts,
    read_listing,
    read_part,
    record_retrieved,
    retrieved_before,
    store_message,
)

__all__ = ["SQLMaildrop", "SQLMessageBody", "SQLStore", "SQLStoreFactory"]

log = Logger(namespace="popframe.stores.sql")

#: The longest maildrop name the schema keeps.
MAX_MAILDROP = 255
#: Octets of part 0 of the messages read in one query (a batch: the one
#: retrieved and those after it), and at most this many messages.  A
#: session holds about two batches at most (the one it serves from, the next).
READ_AHEAD = 512 * 1024
READ_AHEAD_MESSAGES = 64


@implementer(IMessageBody)
class SQLMessageBody:
    """A stored message read a part at a time: the part being sent, and
    the next one read meanwhile (so the client is not kept waiting for a
    query at every part), at most two parts (512 KiB) in memory."""

    def __init__(self, database: Database, message_id: int, parts: int,
                 first: bytes | None = None) -> None:
        self._database = database
        self._id = message_id
        self._parts = parts
        self._next = 0  # the next part to ask for
        self._buffer = b""
        self._offset = 0
        self._coming: defer.Deferred[bytes | None] | None = None  # part being read ahead
        self._came: bytes | Failure | None = None  # ... and what it gave, not yet used
        self._waiter: tuple[defer.Deferred[bytes], int] | None = None
        if first is not None:  # part 0, already read
            self._buffer, self._next = first, 1

    def read(self, size: int) -> defer.Deferred[bytes]:
        if self._offset >= len(self._buffer):
            if self._came is None and self._coming is None:
                self._fetch()
            if self._came is None:  # still coming: wait for it
                waiter: defer.Deferred[bytes] = defer.Deferred()
                self._waiter = (waiter, size)
                return waiter
            came = self._came
            if isinstance(came, Failure):
                return defer.fail(came)  # and every later read too
            self._use(came)
        data = self._take(size)
        if self._came is None and self._coming is None:
            self._fetch()  # the next part, while this one is sent
        return defer.succeed(data)

    def _fetch(self) -> None:
        if self._next >= self._parts:
            self._came = b""
            return
        part, self._next = self._next, self._next + 1
        self._coming = read_part(self._database, self._id, part)
        self._coming.addCallbacks(self._arrived, self._arrived)

    def _arrived(self, data: bytes | None | Failure) -> None:
        self._coming = None
        if self._next > self._parts:  # closed meanwhile
            return
        if data is None:  # deleted under us, by someone who ignored the lock
            data = Failure(MessageVanished())
        self._came = data
        if self._waiter is None:
            return
        (waiter, size), self._waiter = self._waiter, None
        if isinstance(data, Failure):
            waiter.errback(data)
            return
        self._use(data)
        chunk = self._take(size)
        if self._came is None and self._coming is None:
            self._fetch()
        waiter.callback(chunk)

    def _use(self, came: bytes) -> None:
        """Make the part that came the current one."""
        self._buffer, self._offset, self._came = came, 0, None

    def _take(self, size: int) -> bytes:
        start = self._offset
        self._offset = min(len(self._buffer), start + size)
        if start == 0 and self._offset == len(self._buffer):
            return self._buffer  # the whole part: no copy
        return self._buffer[start:self._offset]

    def close(self) -> None:
        self._buffer, self._came = b"", b""
        self._next = self._parts + 1  # closed: what is still coming is dropped


@implementer(IExpiringMaildrop)
class SQLMaildrop(LockedMaildrop):
    """One session's snapshot of a maildrop, taken under its lock.

    Reading ahead: a RETR of a message not read yet reads it with the
    messages after it (part 0 of each, up to :data:`READ_AHEAD` octets) in
    one query; serving a message then starts reading the next such batch
    in the background, so a client retrieving in order finds each message
    in memory.  A session holds and reads about two batches at most
    (:meth:`_make_room`)."""

    def __init__(self, store: SQLStore, name: str, listing: Listing,
                 lock: IMaildropLock | None) -> None:
        super().__init__(lock)
        self._store = store
        self._name = name
        self._listing = listing
        self._rows = {uid: index for index, uid in enumerate(listing.messages.uids)}
        self._ahead: dict[int, bytes] = {}  # index -> part 0, read ahead
        self._asked = bytearray(len(listing.ids))  # 1: part 0 held or being read
        self._reading: dict[int, list[defer.Deferred[bytes]]] = {}  # index -> waiting for it
        self._in_flight: set[int] = set()  # indexes of the batches being read
        self._coming = 0  # octets (by listed size) of the batches being read

    def listing(self) -> MessageList:
        return self._listing.messages

    def open_message(self, uid: str) -> defer.Deferred[BinaryIO | IMessageBody]:
        """A one-part message comes whole, as a file in memory (the
        server reads it with no Deferred per chunk); a longer one as an
        :class:`SQLMessageBody`."""
        self.check_open()
        index = self._rows.get(uid)
        if index is None:
            return defer.fail(NoSuchMessage())
        if not self._listing.parts[index]:  # an empty message
            return defer.succeed(io.BytesIO(b""))
        first = self._ahead.pop(index, None)
        if first is not None:
            self._asked[index] = 0
            self._read_ahead(index + 1)
            return defer.succeed(self._body(index, first))
        waiter: defer.Deferred[bytes] = defer.Deferred()
        self._reading.setdefault(index, []).append(waiter)
        if index not in self._in_flight:
            self._read_batch(index, index)
        return waiter.addCallback(self._opened, index)

    def _opened(self, first: bytes, index: int) -> BinaryIO | IMessageBody:
        self._read_ahead(index + 1)
        return self._body(index, first)

    def _body(self, index: int, first: bytes) -> BinaryIO | IMessageBody:
        listing = self._listing
        if listing.parts[index] == 1:
            return io.BytesIO(first)
        return SQLMessageBody(self._store.database, listing.ids[index], listing.parts[index],
                              first)

    def _read_ahead(self, start: int) -> None:
        """Start reading the next batch, unless one is being read."""
        if self._in_flight or self._state != "open":
            return
        asked, parts = self._asked, self._listing.parts
        for index in range(start, len(asked)):
            if not asked[index] and parts[index]:
                self._read_batch(index, start)
                return

    def _read_batch(self, index: int, position: int) -> None:
        """Part 0 of ``index`` and of the messages after it not read yet,
        up to READ_AHEAD octets (by listed size, a part at most each) or
        READ_AHEAD_MESSAGES messages; at least ``index``.  ``position``:
        where the client is (the message it retrieves, or the one after)."""
        listing = self._listing
        sizes, parts, asked = listing.messages.sizes, listing.parts, self._asked
        batch, total = [index], min(sizes[index], PART_SIZE)
        for i in range(index + 1, min(len(sizes), index + READ_AHEAD_MESSAGES)):
            size = min(sizes[i], PART_SIZE)
            if asked[i] or total + size > READ_AHEAD:
                break
            if parts[i]:  # an empty message has no part to read
                batch.append(i)
                total += size
        self._make_room(position, total)
        for i in batch:
            asked[i] = 1
        self._in_flight.update(batch)
        self._coming += total
        ids = [listing.ids[i] for i in batch]
        read_first_parts(self._store.database, ids).addBoth(self._batch_read, batch, total)

    def _make_room(self, position: int, octets: int) -> None:
        """Keep what the session holds and is reading to about two batches.
        A client that skips about (or goes backwards) leaves messages read
        ahead behind: before reading ``octets`` more, forget those the
        client passed (before ``position``), then those farthest ahead of
        it.  A RETR of a forgotten message reads it again."""
        held = sum(len(data) for data in self._ahead.values()) + self._coming
        if held + octets <= 2 * READ_AHEAD:
            return
        for i in sorted(self._ahead, key=lambda i: (i >= position, -abs(i - position))):
            held -= len(self._ahead.pop(i))
            self._asked[i] = 0
            if held + octets <= 2 * READ_AHEAD:
                return

    def _batch_read(self, result: dict[int, bytes] | Failure, batch: list[int],
                    octets: int) -> None:
        ids = self._listing.ids
        self._in_flight.difference_update(batch)
        self._coming -= octets
        answers: list[tuple[defer.Deferred[bytes], bytes | Failure]] = []
        for index in batch:
            waiting = self._reading.pop(index, [])
            data = None if isinstance(result, Failure) else result.get(ids[index])
            if data is not None and not waiting and self._state == "open":
                self._ahead[index] = data
                continue
            self._asked[index] = 0  # not held: read again by the next RETR of it
            if isinstance(result, Failure):
                answers.extend((waiter, result) for waiter in waiting)
            elif data is None:  # deleted under us, by someone who ignored the lock
                answers.extend((waiter, Failure(MessageVanished())) for waiter in waiting)
            else:
                answers.extend((waiter, data) for waiter in waiting)
        for waiter, answer in answers:  # last: a waiter's callback reads ahead
            if isinstance(answer, Failure):
                waiter.errback(answer)
            else:
                waiter.callback(answer)

    def record_retrieved(self, uids: Sequence[str], when: float) -> defer.Deferred[None]:
        """EXPIRE: ``popframe_messages.retrieved_at``."""
        ids = [self._listing.ids[self._rows[uid]] for uid in uids if uid in self._rows]
        if not ids:
            return defer.succeed(None)
        return self._store.database.run(record_retrieved, self._name, ids, int(when),
                                        write=True)

    def retrieved_before(self, cutoff: float) -> defer.Deferred[list[str]]:
        d = self._store.database.run(retrieved_before, self._name, int(cutoff))
        return d.addCallback(lambda uids: [uid for uid in uids if uid in self._rows])

    def apply_deletions(self, uids: list[str]) -> defer.Deferred[None]:
        self._ahead.clear()
        ids = [self._listing.ids[self._rows[uid]] for uid in uids]
        verify = getattr(self._lock, "verify", None)
        remove = hide_messages if self._store.dele == "hide" else delete_messages
        return self._store.database.run(remove, self._name, ids, verify, write=True)


@implementer(IDeliverableStore, IImportingStore, IListableStore)
class SQLStore:
    """Maildrops in ``database``, locked with ``locker`` (default: the one
    that suits the engine, :func:`popframe.db.locks.locker_for`)."""

    def __init__(self, database: Database, locker: IMaildropLocker | None = None, *,
                 dele: str = "unlink") -> None:
        self.database = database
        self.locker = locker if locker is not None else locker_for(database)
        # "hide": DELE sets popframe_messages.hidden instead of deleting rows.
        self.dele = dele

    def open(self, user: str, settings: UserSettings | None = None) -> defer.Deferred[IMaildrop]:
        try:
            name = maildrop_name(user, settings)
        except PermanentFailure:
            return defer.fail()
        if isinstance(self.locker, (DatabaseLocker, SQLiteLocker)) and \
                not isinstance(self.locker, ReactorLocker):
            # The lock and the listing in one thread hand-off.  Not
            # abandoned after a deadline (write=True): a lock taken by a
            # call nobody waits for any more would never be released.
            return self.database.run(_lock_and_list, self.locker, name, write=True).addCallback(
                lambda locked: SQLMaildrop(self, name, locked[1], locked[0]))
        if isinstance(self.locker, ReactorLocker):  # PostgreSQL: one round trip
            return self.locker.acquire_and_read(name, *listing_query(name)).addCallback(
                lambda locked: SQLMaildrop(self, name, listing_of(locked[1]), locked[0]))
        return self.locker.acquire(name).addCallback(self._list, name)

    def users(self) -> defer.Deferred[list[str]]:
        """:class:`~popframe.interfaces.IListableStore`: every maildrop name
        with mail (a maildrop is opened by its name)."""
        return self.database.run(maildrop_names)

    def _list(self, lock: IMaildropLock, name: str) -> defer.Deferred[IMaildrop]:
        def opened(listing: Listing) -> IMaildrop:
            return SQLMaildrop(self, name, listing, lock)

        def failed(failure: Failure) -> defer.Deferred[IMaildrop]:
            released: defer.Deferred[None] = lock.release()
            return released.addBoth(lambda _: failure)

        return read_listing(self.database, name).addCallbacks(opened, failed)

    def deliver(self, user: str, message: BinaryIO,
                settings: UserSettings | None = None) -> defer.Deferred[None]:
        return self.add_message(user, message, settings=settings)

    def add_message(self, user: str, message: BinaryIO, uid: str | None = None,
                    settings: UserSettings | None = None) -> defer.Deferred[None]:
        """:meth:`deliver` with a uid of the caller's (an import from a
        Maildir keeps its UIDLs); a fresh one (32 hex digits) otherwise."""
        try:
            name = maildrop_name(user, settings)
        except PermanentFailure:
            return defer.fail()
        if uid is None:
            uid = uuid.uuid4().hex
        elif not valid_uid(uid):
            return defer.fail(ValueError(f"{uid!r} is not a valid UIDL"))
        return self.database.run(store_message, name, uid, message, write=True)

    def check_uid(self, uid: str) -> None:
        """:class:`~popframe.interfaces.IImportingStore`: any valid UIDL."""
        if not valid_uid(uid):
            raise ValueError(f"{uid!r} is not a valid UIDL")

    def stored_size(self, uid: str, size: int) -> int:
        """:class:`~popframe.interfaces.IImportingStore`: the uid is a column."""
        return size


def _lock_and_list(session: Session, locker: DatabaseLocker | SQLiteLocker, name: str
                   ) -> tuple[IMaildropLock, Listing]:
    """Blocking: take ``name``'s lock, then list the maildrop under it."""
    lock = locker.acquire_blocking(name)
    try:
        return lock, list_maildrop(session, name)
    except BaseException:
        locker.release_blocking(lock)  # type: ignore[arg-type]
        raise


def maildrop_name(user: str, settings: UserSettings | None) -> str:
    # A location of a file store's kind (a passwd-file's userdb_mail) names
    # no SQL maildrop: the user's own is used.
    given = settings.maildrop if settings is not None and settings.maildrop_kind is None else None
    name = given or user
    if not name or len(name) > MAX_MAILDROP:
        log.warn("refusing maildrop name of {length} characters for {user!r}",
                 length=len(name), user=user)
        raise PermanentFailure()
    return name


@implementer(IMaildropStoreFactory)
class SQLStoreFactory:
    storeName = "sql"
    argStringFormat = ("sql:dsn=postgresql://USER@HOST:PORT/DB[:dele=hide] "
                       "(or mysql://..., sqlite:////path.db)")
    storeHelp = """\
Maildrops and messages in a database: PostgreSQL, MariaDB/MySQL or SQLite.
dsn= is a URL: postgresql://USER@HOST:PORT/DB, mysql://USER@HOST:PORT/DB,
sqlite:////absolute/path.db; a password in the URL, in ?password_file=PATH,
or in the driver's environment (PGPASSWORD, MYSQL_PWD).  Create the tables
with 'popframe db upgrade --dsn URL'.  Maildrop locks hold across hosts on
PostgreSQL (advisory locks) and MariaDB (GET_LOCK), across processes on
SQLite (flock).  dele=hide: DELE keeps the row, marked hidden (no longer
listed by POP3); dele=unlink (the default) deletes it.  See docs/sql.md.
"""

    def storeFromString(self, argstring: str) -> SQLStore:
        dsn, options = split_options(argstring, DELE_OPTION)
        values = parse_store_options("sql", options, DELE_OPTION, DELE_DEFAULT)
        return SQLStore(configured_database(dsn, "--store", "sql"), dele=values["dele"])

"""The SQL store: maildrops and messages in SQLite, PostgreSQL or MariaDB
(``--store sql:dsn=URL``).

- Open: the maildrop lock (:mod:`popframe.db.locks`: across hosts on
  PostgreSQL and MariaDB, across processes on SQLite), then one query of
  the listing index: ids, uids, RETR sizes and wire-ready flags, no body;
  both in one thread hand-off.
- RETR: an :class:`SQLMessageBody` reads a message of several parts a
  part (256 KiB) at a time, one query per part, and only when the client
  took the last one.  A message of one part is served from memory (a
  file object: no Deferred per chunk), read with the small one-part
  messages after it
  in the listing, up to :data:`READ_AHEAD` octets (256 KiB) in one query: POP3
  clients mostly retrieve everything in order, and a query per 3 KB
  message cost more than the message (docs/sql.md has the numbers).  What
  was read ahead is held by the session until retrieved or the session
  ends.
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
from popframe.db.locks import DatabaseLocker, SQLiteLocker, locker_for
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
    maildrop_names,
    read_first_parts,
    read_part,
    record_retrieved,
    retrieved_before,
    store_message,
)

__all__ = ["SQLMaildrop", "SQLMessageBody", "SQLStore", "SQLStoreFactory"]

log = Logger(namespace="popframe.stores.sql")

#: The longest maildrop name the schema keeps.
MAX_MAILDROP = 255
#: Octets of small messages read with the one retrieved (and held by its
#: session), and at most this many messages.
READ_AHEAD = 256 * 1024
READ_AHEAD_MESSAGES = 64


@implementer(IMessageBody)
class SQLMessageBody:
    """A stored message read a part at a time: at most one part (256 KiB)
    in memory, and the next asked for only when the server wants more."""

    def __init__(self, database: Database, message_id: int, parts: int,
                 first: bytes | None = None) -> None:
        self._database = database
        self._id = message_id
        self._parts = parts
        self._next = 0
        self._buffer = b""
        self._offset = 0
        if first is not None:  # part 0, already read
            self._buffer, self._next = first, 1

    def read(self, size: int) -> defer.Deferred[bytes]:
        if self._offset < len(self._buffer):
            return defer.succeed(self._take(size))
        if self._next >= self._parts:
            self._buffer = b""
            return defer.succeed(b"")
        part, self._next = self._next, self._next + 1
        return self._database.run(read_part, self._id, part).addCallback(self._got, size)

    def _got(self, data: bytes | None, size: int) -> bytes:
        if data is None:  # deleted under us, by someone who ignored the lock
            raise MessageVanished()
        self._buffer, self._offset = data, 0
        return self._take(size) if data else self.read(size)  # type: ignore[return-value]

    def _take(self, size: int) -> bytes:
        start = self._offset
        self._offset = min(len(self._buffer), start + size)
        if start == 0 and self._offset == len(self._buffer):
            return self._buffer  # the whole part: no copy
        return self._buffer[start:self._offset]

    def close(self) -> None:
        self._buffer = b""
        self._next = self._parts


@implementer(IExpiringMaildrop)
class SQLMaildrop(LockedMaildrop):
    """One session's snapshot of a maildrop, taken under its lock."""

    def __init__(self, store: SQLStore, name: str, listing: Listing,
                 lock: IMaildropLock | None) -> None:
        super().__init__(lock)
        self._store = store
        self._name = name
        self._listing = listing
        self._rows = {uid: index for index, uid in enumerate(listing.messages.uids)}
        self._ahead: dict[int, bytes] = {}  # index -> part 0, read ahead

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
        listing = self._listing
        database = self._store.database
        if listing.parts[index] != 1:
            return defer.succeed(SQLMessageBody(database, listing.ids[index],
                                                listing.parts[index]))
        first = self._ahead.pop(index, None)
        if first is not None:
            return defer.succeed(io.BytesIO(first))
        batch = self._read_ahead_from(index)
        ids = [listing.ids[i] for i in batch]

        def got(parts: dict[int, bytes]) -> BinaryIO:
            for i in batch[1:]:
                if listing.ids[i] in parts:
                    self._ahead[i] = parts[listing.ids[i]]
            data = parts.get(listing.ids[index])
            if data is None:
                raise MessageVanished()
            return io.BytesIO(data)

        return database.run(read_first_parts, ids).addCallback(got)

    def _read_ahead_from(self, index: int) -> list[int]:
        """``index`` and the one-part messages after it, not yet read
        ahead, up to READ_AHEAD octets (listed sizes, roughly the stored)."""
        listing = self._listing
        sizes, batch = listing.messages.sizes, [index]
        total = sizes[index]
        for i in range(index + 1, min(len(sizes), index + READ_AHEAD_MESSAGES)):
            if listing.parts[i] != 1 or i in self._ahead or total + sizes[i] > READ_AHEAD:
                break
            batch.append(i)
            total += sizes[i]
        return batch

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
        if isinstance(self.locker, (DatabaseLocker, SQLiteLocker)):
            # The lock and the listing in one thread hand-off.  Not
            # abandoned after a deadline (write=True): a lock taken by a
            # call nobody waits for any more would never be released.
            return self.database.run(_lock_and_list, self.locker, name, write=True).addCallback(
                lambda locked: SQLMaildrop(self, name, locked[1], locked[0]))
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

        return self.database.run(list_maildrop, name).addCallbacks(opened, failed)

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

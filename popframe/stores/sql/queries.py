"""The SQL store's work, one function per thing it does: the reads of
message octets as single statements (:meth:`~popframe.db.Database.query`:
on the reactor with PostgreSQL), the rest blocking, each run in a pool
thread with a :class:`~popframe.db.Session`.  Parameters only: no value
is ever put into SQL text."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from twisted.internet.defer import Deferred

from popframe.db import Database, Session
from popframe.db.migrations import PART_SIZE
from popframe.interfaces import MessageList
from popframe.protocol.encoding import wire_form

__all__ = ["Listing", "delete_messages", "hide_messages", "list_maildrop", "listing_of",
           "listing_query", "maildrop_names", "read_first_parts", "read_listing", "read_part",
           "record_retrieved", "retrieved_before", "store_message"]

#: Ids per DELETE statement (well under every engine's parameter limit).
_BATCH = 500


@dataclass(frozen=True, slots=True)
class Listing:
    """A maildrop at open: the messages (uid, RETR size, wire-ready) and,
    for each, its row id and number of parts."""

    messages: MessageList
    ids: list[int]
    parts: list[int]


#: From the covering index ``popframe_messages_listing``: no body read.
_LISTING = ("SELECT id, uid, size, ready, parts FROM popframe_messages "
            "WHERE maildrop = ? AND hidden = ? ORDER BY id")


def list_maildrop(session: Session, maildrop: str) -> Listing:
    """Blocking: the maildrop's listing (in the same hand-off as its lock)."""
    return listing_of(session.query(*listing_query(maildrop)))


def read_listing(database: Database, maildrop: str) -> Deferred[Listing]:
    """The maildrop's listing, as a single read (once its lock is held)."""
    return database.query(*listing_query(maildrop)).addCallback(listing_of)


def listing_query(maildrop: str) -> tuple[str, tuple[Any, ...]]:
    """The listing's statement and parameters, for a caller that runs it
    itself (the PostgreSQL lock connection, right after the lock)."""
    return _LISTING, (maildrop, False)


def listing_of(rows: Sequence[tuple[Any, ...]]) -> Listing:
    """A :class:`Listing` from the rows of :func:`listing_query`."""
    return Listing(
        MessageList([row[1] for row in rows], [int(row[2]) for row in rows],
                    bytes(1 if row[3] else 0 for row in rows)),
        [int(row[0]) for row in rows], [int(row[4]) for row in rows])


def read_part(database: Database, message_id: int, part: int) -> Deferred[bytes | None]:
    """One part of a message's stored octets; None when the message is gone."""
    d = database.query(
        "SELECT data FROM popframe_message_parts WHERE message_id = ? AND part = ?",
        (message_id, part))
    return d.addCallback(lambda rows: bytes(rows[0][0]) if rows else None)


def read_first_parts(database: Database, message_ids: list[int]) -> Deferred[dict[int, bytes]]:
    """Part 0 of each of these messages, in one statement (the read-ahead)."""
    marks = ", ".join("?" * len(message_ids))
    d = database.query(
        f"SELECT message_id, data FROM popframe_message_parts WHERE part = 0 AND message_id IN "
        f"({marks})", message_ids)
    return d.addCallback(lambda rows: {int(row[0]): bytes(row[1]) for row in rows})


def delete_messages(session: Session, maildrop: str, ids: list[int],
                    verify: Callable[[Session], None] | None) -> None:
    """QUIT's deletions in one transaction: all or none, whenever the
    process dies.  ``verify`` (the maildrop lock's) runs first, inside it."""
    with session.transaction():
        if verify is not None:
            verify(session)
        for start in range(0, len(ids), _BATCH):
            batch = ids[start:start + _BATCH]
            marks = ", ".join("?" * len(batch))
            session.execute(f"DELETE FROM popframe_message_parts WHERE message_id IN ({marks})",
                            batch)
            session.execute(
                f"DELETE FROM popframe_messages WHERE maildrop = ? AND id IN ({marks})",
                [maildrop, *batch])


def hide_messages(session: Session, maildrop: str, ids: list[int],
                  verify: Callable[[Session], None] | None) -> None:
    """QUIT's deletions with ``dele=hide``: the rows stay, POP3 no longer
    lists them; one transaction, like :func:`delete_messages`."""
    with session.transaction():
        if verify is not None:
            verify(session)
        for batch in _batches(ids):
            marks = ", ".join("?" * len(batch))
            session.execute(
                f"UPDATE popframe_messages SET hidden = ? WHERE maildrop = ? AND id IN ({marks})",
                [True, maildrop, *batch])


def record_retrieved(session: Session, maildrop: str, ids: list[int], when: int) -> None:
    """EXPIRE: these messages were retrieved at ``when`` (Unix seconds);
    a time already recorded is kept (expiry counts from the first)."""
    with session.transaction():
        for batch in _batches(ids):
            marks = ", ".join("?" * len(batch))
            session.execute(
                f"UPDATE popframe_messages SET retrieved_at = ? WHERE maildrop = ? AND "
                f"retrieved_at IS NULL AND id IN ({marks})", [when, maildrop, *batch])


def retrieved_before(session: Session, maildrop: str, cutoff: int) -> list[str]:
    """The uids of listed messages retrieved before ``cutoff``."""
    rows = session.query(
        "SELECT uid FROM popframe_messages WHERE maildrop = ? AND hidden = ? AND "
        "retrieved_at < ? ORDER BY id", (maildrop, False, cutoff))
    return [str(row[0]) for row in rows]


def maildrop_names(session: Session) -> list[str]:
    """Every maildrop that holds a message."""
    return [str(row[0]) for row in session.query(
        "SELECT DISTINCT maildrop FROM popframe_messages ORDER BY maildrop")]


def _batches(ids: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), _BATCH):
        yield ids[start:start + _BATCH]


def store_message(session: Session, maildrop: str, uid: str, message: BinaryIO,
                  part_size: int = PART_SIZE) -> None:
    """Add a message read from ``message`` a part at a time, in one
    transaction: committed whole when this returns, or not at all."""
    with session.transaction():
        message_id = session.insert_id(
            "INSERT INTO popframe_messages (maildrop, uid, size, stored_size, ready, parts) "
            "VALUES (?, ?, 0, 0, ?, 0)", (maildrop, uid, False))
        counts = [0, 0]  # parts, octets

        def parts() -> Iterator[bytes]:
            while True:
                data = message.read(part_size)
                if not data:
                    return
                session.execute("INSERT INTO popframe_message_parts (message_id, part, data) "
                                "VALUES (?, ?, ?)", (message_id, counts[0], data))
                counts[0] += 1
                counts[1] += len(data)
                yield data

        form = wire_form(parts())
        session.execute(
            "UPDATE popframe_messages SET size = ?, stored_size = ?, ready = ?, parts = ? "
            "WHERE id = ?", (form.size, counts[1], form.ready, counts[0], message_id))

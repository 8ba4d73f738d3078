"""The SQL store on SQLite, PostgreSQL and MariaDB (the real servers)."""

from __future__ import annotations

import io
import os
import resource
from pathlib import Path
from typing import BinaryIO

import pytest
from sql_support import fresh_database

from popframe.db import Database, parse_url
from popframe.db.locks import DatabaseLock
from popframe.errors import MaildropInUse, NoSuchMessage
from popframe.interfaces import IMessageBody, UserSettings, valid_uid
from popframe.protocol.encoding import wire_form
from popframe.stores.sql import SQLStore
from popframe.stores.sql.queries import list_maildrop
from popframe.testing import wait_for

pytestmark = pytest.mark.external

MESSAGES = [b"Subject: one\r\n\r\nfirst\r\n", b"Subject: two\n\nsecond, bare LF\n",
            b"Subject: three\r\n\r\n.dot line\r\n", b""]


def make_store(dsn: str) -> SQLStore:
    return SQLStore(Database(parse_url(dsn)))


def deliver(store: SQLStore, user: str, octets: bytes, **kwargs: object) -> None:
    wait_for(store.deliver(user, io.BytesIO(octets), **kwargs))  # type: ignore[arg-type]


def read_all(body: IMessageBody | BinaryIO, size: int = 65536) -> bytes:
    if not IMessageBody.providedBy(body):  # a one-part message, from memory
        with body:  # type: ignore[union-attr]
            return body.read()  # type: ignore[union-attr,no-any-return]
    chunks = []
    while True:
        chunk = wait_for(body.read(size))
        assert len(chunk) <= size
        if not chunk:
            body.close()
            return b"".join(chunks)
        chunks.append(chunk)


def test_listing_sizes_uids_and_bodies(dsn: str) -> None:
    store = make_store(dsn)
    for message in MESSAGES:
        deliver(store, "alice", message)
    deliver(store, "bob", b"Subject: not alice's\r\n\r\n")
    maildrop = wait_for(store.open("alice"))
    listing = maildrop.listing()
    assert len(listing) == len(MESSAGES)
    assert [m.size for m in listing] == [wire_form(m).size for m in MESSAGES]
    assert [m.wire_ready for m in listing] == [wire_form(m).ready for m in MESSAGES]
    assert all(valid_uid(m.uid) for m in listing) and len({m.uid for m in listing}) == 4
    for info, message in zip(listing, MESSAGES, strict=True):
        body = wait_for(maildrop.open_message(info.uid))
        assert read_all(body) == message
    with pytest.raises(NoSuchMessage):
        wait_for(maildrop.open_message("not-a-uid"))
    wait_for(maildrop.abandon())
    again = wait_for(store.open("alice"))
    assert list(again.listing().uids) == list(listing.uids)  # stable UIDLs
    wait_for(again.abandon())


def test_second_open_is_in_use_until_released(dsn: str) -> None:
    store = make_store(dsn)
    first = wait_for(store.open("alice"))
    with pytest.raises(MaildropInUse):
        wait_for(store.open("alice"))
    other = wait_for(store.open("bob"))  # another maildrop is free
    wait_for(first.abandon())
    wait_for(wait_for(store.open("alice")).abandon())
    wait_for(other.abandon())


def test_a_second_store_on_the_same_database_is_locked_out(dsn: str) -> None:
    """Two stores, two pools, two lock connections: as two processes are."""
    first, second = make_store(dsn), make_store(dsn)
    held = wait_for(first.open("alice"))
    with pytest.raises(MaildropInUse):
        wait_for(second.open("alice"))
    wait_for(held.commit([]))
    wait_for(wait_for(second.open("alice")).abandon())


def test_commit_deletes_all_at_once_and_keeps_new_mail(dsn: str) -> None:
    store = make_store(dsn)
    for message in MESSAGES:
        deliver(store, "alice", message)
    maildrop = wait_for(store.open("alice"))
    uids = list(maildrop.listing().uids)
    deliver(store, "alice", b"Subject: later\r\n\r\n")  # not in the snapshot
    wait_for(maildrop.commit([uids[0], uids[2]]))
    after = wait_for(store.open("alice"))
    remaining = list(after.listing().uids)
    assert remaining[:2] == [uids[1], uids[3]] and len(remaining) == 3
    wait_for(after.abandon())
    parts = Database(parse_url(dsn)).call(
        lambda s: s.one("SELECT COUNT(*) FROM popframe_message_parts")[0])
    assert parts == 2  # "two" and "later" (the empty message has no part)


def test_maildrop_from_user_settings(dsn: str) -> None:
    store = make_store(dsn)
    deliver(store, "alice", b"Subject: shared\r\n\r\n", settings=UserSettings(maildrop="team"))
    maildrop = wait_for(store.open("bob", UserSettings(maildrop="team")))
    assert len(maildrop.listing()) == 1
    with pytest.raises(MaildropInUse):
        wait_for(store.open("alice", UserSettings(maildrop="team")))
    wait_for(maildrop.abandon())
    own = wait_for(store.open("alice"))
    assert len(own.listing()) == 0
    wait_for(own.abandon())


def test_a_user_name_cannot_inject_sql(dsn: str) -> None:
    store = make_store(dsn)
    deliver(store, "alice", b"Subject: x\r\n\r\n")
    evil = "x' OR '1'='1"
    maildrop = wait_for(store.open(evil))
    assert len(maildrop.listing()) == 0
    deliver(store, evil, b"Subject: y\r\n\r\n")
    wait_for(maildrop.abandon())
    again = wait_for(store.open(evil))
    assert len(again.listing()) == 1
    wait_for(again.abandon())


def test_lost_lock_refuses_deletions(dsn: str) -> None:
    if dsn.startswith("sqlite"):
        pytest.skip("a flock cannot lapse while its process lives")
    store = make_store(dsn)
    deliver(store, "alice", b"Subject: keep me\r\n\r\n")
    maildrop = wait_for(store.open("alice"))
    lock = maildrop._lock
    assert isinstance(lock, DatabaseLock)
    # The lock connection breaks (as in a database restart) and another
    # process takes the maildrop before this one reconnects.
    store.locker.drop_connection()  # type: ignore[attr-defined]
    other = make_store(dsn)
    intruder = wait_for(other.open("alice"))
    from popframe.db.locks import LockLost

    with pytest.raises(LockLost):
        wait_for(maildrop.commit(list(maildrop.listing().uids)))
    assert len(intruder.listing()) == 1
    wait_for(intruder.abandon())
    last = wait_for(other.open("alice"))
    assert len(last.listing()) == 1
    wait_for(last.abandon())


def test_big_message_is_read_in_parts_with_flat_memory(dsn: str, tmp_path: Path) -> None:
    """100 MB delivered and read back: the process's peak RSS grows by a
    small fraction of it (one part, 256 KiB, is held at a time)."""
    size = 100 * 1024 * 1024
    line = b"x" * 76 + b"\r\n"
    source = tmp_path / "big"
    with open(source, "wb") as f:
        for _ in range(size // len(line)):
            f.write(line)
    store = make_store(dsn)
    baseline = _peak_rss_mb()
    with open(source, "rb") as f:
        wait_for(store.deliver("big", f), timeout=120)
    maildrop = wait_for(store.open("big"))
    info = maildrop.listing()[0]
    assert info.size == source.stat().st_size and info.wire_ready
    body = wait_for(maildrop.open_message(info.uid))
    total = 0
    while chunk := wait_for(body.read(65536)):
        total += len(chunk)
    body.close()
    assert total == info.size
    growth = _peak_rss_mb() - baseline
    assert growth < 32, f"peak RSS grew by {growth:.0f} MB"
    wait_for(maildrop.commit([info.uid]), timeout=60)


def _peak_rss_mb() -> float:
    """VmHWM, reset first where the kernel allows (clear_refs 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_listing_reads_no_body(dsn: str) -> None:
    """The listing query names no body column, and answers from the index
    on PostgreSQL (EXPLAIN: an index-only scan)."""
    store = make_store(dsn)
    for n in range(20):
        deliver(store, "alice", b"Subject: %d\r\n\r\n" % n)
    database = Database(parse_url(dsn))
    listing = database.call(list_maildrop, "alice")
    assert len(listing.messages) == 20
    if dsn.startswith("postgresql"):
        plan = database.call(lambda s: s.query(
            "EXPLAIN (COSTS OFF) SELECT id, uid, size, ready, parts FROM popframe_messages "
            "WHERE maildrop = ? ORDER BY id", ("alice",)))
        assert "popframe_messages" in str(plan)


@pytest.mark.parametrize("engine", ["sqlite"])
def test_sqlite_locks_hold_across_processes(engine: str, tmp_path: Path) -> None:
    with fresh_database(engine, tmp_path) as dsn:
        store = make_store(dsn)
        held = wait_for(store.open("alice"))
        child = os.fork()
        if child == 0:  # pragma: no cover (the child reports by exit status)
            try:
                from popframe.db.locks import SQLiteLocker

                SQLiteLocker(parse_url(dsn).database).acquire("alice").addCallbacks(
                    lambda _: os._exit(1), lambda f: os._exit(0 if f.check(MaildropInUse) else 2))
            finally:
                os._exit(3)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        wait_for(held.abandon())

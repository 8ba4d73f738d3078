"""popframe.db.pq: PostgreSQL on the reactor (pipelined statements), and
``Database.query``, the one way to run a single read, on every engine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sql_support import admin_connection, fresh_database
from twisted.internet import defer, reactor

from popframe.db import Database, DatabaseError, parse_url, pq
from popframe.db.locks import ReactorLocker
from popframe.errors import MaildropInUse
from popframe.testing import wait_for

pytestmark = pytest.mark.external


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_database("postgresql") as url:
        yield url


def _connection(url: str) -> pq.PipelinedConnection:
    database = Database(parse_url(url))
    return wait_for(pq.connect(reactor, database.engine.conninfo(), 5))  # type: ignore[attr-defined]


def _prepared(connection: pq.PipelinedConnection, statement: str) -> int:
    """How many statements like ``statement`` (``LIKE``) the connection prepared."""
    rows = wait_for(connection.query(
        b"SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE $1", [statement]))
    return int(rows[0][0])


def test_rows_come_typed_with_their_column_names(pg_url: str) -> None:
    connection = _connection(pg_url)
    try:
        rows = wait_for(connection.query(
            b"SELECT $1::text AS name, $2::bigint AS n, $3::bool AS ok, "
            b"decode('00ff0d0a', 'hex') AS data, NULL::text AS nothing", ["ål", 2**40, True]))
        assert rows == [("ål", 2**40, True, b"\x00\xff\r\n", None)]
        assert rows.columns == ("name", "n", "ok", "data", "nothing")
        ids = wait_for(connection.query(b"SELECT x FROM unnest($1::bigint[]) AS x", [[3, 1, 2]]))
        assert ids == [(3,), (1,), (2,)]
    finally:
        connection.close()


def test_statements_in_flight_together_are_answered_in_order(pg_url: str) -> None:
    connection = _connection(pg_url)
    try:
        sent = [connection.query(b"SELECT $1::int * 2", [n]) for n in range(200)]
        assert connection.in_flight == 200
        answers = wait_for(defer.gatherResults(sent))
        assert answers == [[(n * 2,)] for n in range(200)]
    finally:
        connection.close()


def test_a_failed_statement_fails_alone(pg_url: str) -> None:
    connection = _connection(pg_url)
    try:
        before = connection.query(b"SELECT 1")
        bad = connection.query(b"SELECT no_such_column FROM pg_class")
        after = connection.query(b"SELECT 2")
        assert wait_for(before) == [(1,)]
        with pytest.raises(pq.QueryFailed, match="no_such_column"):
            wait_for(bad)
        assert wait_for(after) == [(2,)]
        # A statement that failed to prepare is prepared again next time.
        with pytest.raises(pq.QueryFailed):
            wait_for(connection.query(b"SELECT no_such_column FROM pg_class"))
    finally:
        connection.close()


def test_a_statement_is_prepared_once_per_connection(pg_url: str) -> None:
    connection = _connection(pg_url)
    try:
        for n in range(5):
            assert wait_for(connection.query(b"SELECT $1::int", [n])) == [(n,)]
        assert _prepared(connection, "SELECT $1::int") == 1
    finally:
        connection.close()


def test_a_killed_connection_fails_what_is_in_flight(pg_url: str) -> None:
    connection = _connection(pg_url)
    pid = wait_for(connection.query(b"SELECT pg_backend_pid()"))[0][0]
    waiting = connection.query(b"SELECT pg_sleep(5)")
    admin = admin_connection("postgresql")
    admin.cursor().execute("SELECT pg_terminate_backend(%s)", (pid,))
    admin.close()
    with pytest.raises(pq.ConnectionGone):
        wait_for(waiting, timeout=10)
    assert connection.broken
    with pytest.raises(pq.ConnectionGone):
        wait_for(connection.query(b"SELECT 1"))
    connection.close()


def test_database_query_sends_again_on_a_new_connection_after_one_broke(pg_url: str) -> None:
    database = Database(parse_url(pg_url))
    pid = wait_for(database.query("SELECT pg_backend_pid()"))[0][0]
    admin = admin_connection("postgresql")
    admin.cursor().execute("SELECT pg_terminate_backend(%s)", (pid,))
    admin.close()
    rows = wait_for(database.query("SELECT pg_backend_pid(), ?::text", ("again",)))
    assert rows[0][0] != pid and rows[0][1] == "again"


def test_database_query_maps_failures_to_database_error(pg_url: str) -> None:
    database = Database(parse_url(pg_url))
    with pytest.raises(DatabaseError):
        wait_for(database.query("SELECT * FROM no_such_table"))
    nowhere = Database(parse_url("postgresql://postgres@127.0.0.1:1/test?connect_timeout=2"))
    with pytest.raises(DatabaseError):
        wait_for(nowhere.query("SELECT 1"), timeout=10)


def test_a_large_value_comes_whole(pg_url: str) -> None:
    database = Database(parse_url(pg_url))
    value = bytes(range(256)) * 8192  # 2 MiB
    rows = wait_for(database.query("SELECT decode(repeat(?, 8192), 'hex')",
                                   (bytes(range(256)).hex(),)))
    assert rows[0][0] == value


@pytest.mark.parametrize("engine", ["sqlite", "mysql"])
def test_database_query_in_threads_on_the_other_engines(engine: str, tmp_path: Path) -> None:
    with fresh_database(engine, tmp_path) as url:
        database = Database(parse_url(url))
        rows = wait_for(database.query("SELECT name, maildrop FROM popframe_users WHERE name = ?",
                                       ("nobody",)))
        assert rows == [] and rows.columns == ("name", "maildrop")
        with pytest.raises(DatabaseError):
            wait_for(database.query("SELECT * FROM no_such_table"))


def test_the_reactor_locker_takes_its_names_again_on_a_new_lock_connection(pg_url: str) -> None:
    """The lock connection is killed (a database restart, a failover): the
    next use makes a new one and takes the held names again, so another
    process still finds them in use."""
    locker = ReactorLocker(Database(parse_url(pg_url)))
    other = ReactorLocker(Database(parse_url(pg_url)))
    held = wait_for(locker.acquire("alice"))
    with pytest.raises(MaildropInUse):  # this process's own second session: no statement
        wait_for(locker.acquire("alice"))
    admin = admin_connection("postgresql")
    admin.cursor().execute("SELECT pg_terminate_backend(%s)", (locker._ident,))
    admin.close()
    wait_for(locker.acquire("bob"))  # on a new lock connection, alice taken again
    with pytest.raises(MaildropInUse):
        wait_for(other.acquire("alice"))
    wait_for(held.release())
    wait_for(wait_for(other.acquire("alice")).release())


def test_acquire_and_read_in_one_round_trip(pg_url: str) -> None:
    """The lock and a read under it, sent together on the lock connection:
    the read comes with the lock; a refused lock is ``[IN-USE]``; a read
    that fails leaves the name free."""
    locker = ReactorLocker(Database(parse_url(pg_url)))
    other = ReactorLocker(Database(parse_url(pg_url)))
    wait_for(locker.acquire("warm-up"))  # the lock connection exists: the one-trip path
    lock, rows = wait_for(locker.acquire_and_read("alice", "SELECT ?::text", ("under",)))
    assert rows == [("under",)]
    wait_for(other.acquire("warm-up-too"))
    with pytest.raises(MaildropInUse):
        wait_for(other.acquire_and_read("alice", "SELECT 1", ()))
    wait_for(lock.release())
    with pytest.raises(DatabaseError):
        wait_for(locker.acquire_and_read("bob", "SELECT * FROM no_such_table", ()))
    wait_for(wait_for(other.acquire("bob")).release())  # bob was released


def test_a_host_name_is_resolved_off_the_reactor(pg_url: str) -> None:
    """``localhost`` is resolved by the reactor's resolver (a thread), then
    given to libpq as ``hostaddr``: libpq never blocks the reactor on it."""
    url = parse_url(pg_url)
    database = Database(parse_url(f"postgresql://{url.user}@localhost:{url.port}/{url.database}"))
    assert wait_for(database.query("SELECT inet_server_addr()::text"))[0][0].startswith("127.")


def test_a_statement_failing_when_run_stays_prepared(pg_url: str) -> None:
    """Only a failed PREPARE is forgotten: a statement that fails for some
    values (here a division by zero) is not prepared again each time."""
    connection = _connection(pg_url)
    try:
        for value in (0, 1, 0, 2):
            d = connection.query(b"SELECT 10 / $1::int", [value])
            if value:
                assert wait_for(d) == [(10 // value,)]
            else:
                with pytest.raises(pq.QueryFailed, match="division by zero"):
                    wait_for(d)
        assert _prepared(connection, "SELECT 10 /%") == 1
    finally:
        connection.close()


def test_acquire_and_read_on_a_lock_connection_that_broke_unseen(pg_url: str) -> None:
    """The lock connection was killed and nothing has read from it since:
    the lock and the read go out on a new one, and the open succeeds."""
    locker = ReactorLocker(Database(parse_url(pg_url)))
    wait_for(locker.acquire("warm-up"))
    admin = admin_connection("postgresql")
    admin.cursor().execute("SELECT pg_terminate_backend(%s)", (locker._ident,))
    admin.close()
    lock, rows = wait_for(locker.acquire_and_read("alice", "SELECT ?::text", ("again",)))
    assert rows == [("again",)]
    wait_for(lock.release())

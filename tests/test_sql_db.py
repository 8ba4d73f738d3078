"""popframe.db: URLs, the schema and its upgrade, the pool's failures, and
the ``popframe db`` / ``popframe user`` commands."""

from __future__ import annotations

import io
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from sql_support import fresh_database
from twisted.internet import defer

from popframe.cli import main
from popframe.config import ConfigurationError
from popframe.db import Database, DatabaseError, parse_url
from popframe.db.engines import placeholders
from popframe.db.pool import numbered_statement
from popframe.db.schema import LATEST, SchemaTooNew, check_schema, current_version, upgrade
from popframe.stores.sql import SQLStore, SQLStoreFactory
from popframe.stores.sql import store as sql_store
from popframe.stores.sql.store import READ_AHEAD
from popframe.testing import wait_for

pytestmark = pytest.mark.core

# -- URLs ----------------------------------------------------------------------------------


def test_url_forms(tmp_path: Path) -> None:
    url = parse_url("postgresql://popframe:s3cr%40t@db.example.com:5433/mail?timeout=2&pool=3")
    assert (url.engine, url.user, url.host, url.port, url.database) == \
        ("postgresql", "popframe", "db.example.com", 5433, "mail")
    assert url.resolved_password() == "s3cr@t" and url.timeout == 2 and url.pool == 3
    assert "s3cr" not in str(url) and "s3cr" not in repr(url)
    assert parse_url("mysql://root@127.0.0.1/test").port == 3306
    assert parse_url("sqlite:////var/lib/popframe/mail.db").database == "/var/lib/popframe/mail.db"
    secret = tmp_path / "pw"
    secret.write_text("from a file\n")
    assert parse_url(f"mysql://u@h:1/d?password_file={secret}").resolved_password() == "from a file"
    local = parse_url("postgresql://popframe@/mail?socket=/var/run/postgresql")
    assert (local.host, local.socket, local.database) == (None, "/var/run/postgresql", "mail")
    assert str(local) == "postgresql://popframe@:5432/mail?socket=/var/run/postgresql"
    assert local.key() != parse_url("postgresql://popframe@localhost/mail").key()


def test_placeholders_outside_quotes_only() -> None:
    text = "SELECT x FROM t WHERE a = ? AND b = '?' AND \"c?\" LIKE '50%' AND d = ?"
    assert numbered_statement(text) == \
        b"SELECT x FROM t WHERE a = $1 AND b = '?' AND \"c?\" LIKE '50%' AND d = $2"
    assert placeholders(text, lambda n: "%s", percent="%%") == \
        "SELECT x FROM t WHERE a = %s AND b = '?' AND \"c?\" LIKE '50%%' AND d = %s"
    assert placeholders("it''s ? 'it''s ?' ?", lambda n: f":{n}") == "it''s :1 'it''s ?' :2"


SOCKETS = {"postgresql": "/var/run/postgresql", "mysql": "/run/mysqld/mysqld.sock"}


@pytest.mark.external
@pytest.mark.parametrize("engine", ["postgresql", "mysql"])
def test_a_unix_socket_instead_of_tcp(engine: str) -> None:
    """``socket=``: the same database over the server's Unix-domain socket,
    for the threads' connections and (PostgreSQL) the reactor's."""
    with fresh_database(engine) as url:
        admin = parse_url(url)
        local = parse_url(f"{engine}://{admin.user}@/{admin.database}?socket={SOCKETS[engine]}")
        database = Database(local)
        assert database.call(lambda session: session.one("SELECT 1")) == (1,)
        assert wait_for(database.query("SELECT ?", (7,)))[0][0] in (7, "7")
        if engine == "postgresql":  # no TCP peer: the server sees a local connection
            rows = wait_for(database.query("SELECT inet_client_addr() IS NULL"))
            assert rows == [(True,)]


@pytest.mark.parametrize(("text", "problem"), [
    ("oracle://x@y/z", "starts with"),
    ("sqlite:///relative.db", "absolute path"),
    ("postgresql://u@h:5432/", "name the database"),
    ("postgresql://u@:5432/db", "name the host"),
    ("postgresql://u@h:99999/db", "port"),
    ("postgresql://u@h/db?colour=blue", "unknown URL parameter 'colour'"),
    ("postgresql://u@h/db?timeout=soon", "not a number"),
    ("postgresql://u@h/db?driver=pymysql", "driver= is for mysql"),
    ("postgresql://u@/db?socket=relative", "socket= needs an absolute path"),
    ("mysql://u:pw@h/db?password_file=/x", "not both"),
])
def test_bad_urls_say_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem) as caught:
        parse_url(text)
    assert "pw" not in str(caught.value).replace("password_file", "")


def test_environment_password_for_mariadb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MYSQL_PWD", "from the environment")
    assert parse_url("mysql://u@h/db").resolved_password() == "from the environment"


# -- the schema --------------------------------------------------------------------------------


@pytest.mark.external
@pytest.mark.parametrize("engine", ["sqlite", "postgresql", "mysql"])
def test_upgrade_is_idempotent_and_refuses_a_newer_database(engine: str, tmp_path: Path) -> None:
    with fresh_database(engine, tmp_path, schema=False) as dsn:
        database = Database(parse_url(dsn))
        assert database.call(current_version) is None
        with pytest.raises(ConfigurationError, match="popframe db upgrade"):
            check_schema(database, "--store")
        assert database.call(upgrade).after == LATEST
        again = database.call(upgrade)
        assert (again.before, again.after) == (LATEST, LATEST)
        check_schema(database, "--store")
        database.call(lambda s: s.execute("UPDATE popframe_schema SET version = ?",
                                          (LATEST + 1,)))
        with pytest.raises(SchemaTooNew):
            database.call(upgrade)
        with pytest.raises(ConfigurationError, match="newer"):
            check_schema(database, "--store")
        database.close()


def test_store_refuses_a_database_without_the_schema(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="--store: .*popframe db upgrade"):
        SQLStoreFactory().storeFromString(f"dsn=sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(ConfigurationError, match="dsn=URL"):
        SQLStoreFactory().storeFromString(f"sqlite:///{tmp_path / 'empty.db'}")


@pytest.mark.process
def test_unreachable_database_fails_promptly_as_temporary() -> None:
    database = Database(parse_url("postgresql://u@127.0.0.1:9/none?connect_timeout=1"))
    with pytest.raises(DatabaseError):
        database.call(current_version)
    store = SQLStore(database)
    with pytest.raises(DatabaseError):
        wait_for(store.open("alice"), timeout=10)


@pytest.mark.external
def test_read_ahead_serves_small_messages_from_one_query(dsn: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    store = SQLStore(Database(parse_url(dsn)))
    for n in range(10):
        wait_for(store.deliver("alice", io.BytesIO(b"Subject: %d\r\n\r\nbody\r\n" % n)))
    runs = CountingRuns(store, monkeypatch)
    maildrop = wait_for(store.open("alice"))
    uids = list(maildrop.listing().uids)
    for n in (4, *range(10)):  # one out of order first, then all in order
        body = wait_for(maildrop.open_message(uids[n]))  # one part: a file in memory
        assert body.read() == b"Subject: %d\r\n\r\nbody\r\n" % n
        body.close()
    wait_for(maildrop.abandon())
    assert len(runs.named("read_first_parts")) == 2  # 4..9 with 4, then 0..3 with 0
    assert not runs.named("read_part")


class CountingRuns:
    """Wraps ``store.database.run`` and the store's two reads (which go
    through ``Database.query``): every call's function name and arguments
    (the database left out); ``fail``: (name, n) makes the n-th call
    (from 0) of that name fail instead."""

    def __init__(self, store: SQLStore, monkeypatch: pytest.MonkeyPatch,
                 fail: tuple[tuple[str, int], ...] = ()) -> None:
        self.calls: list[tuple[str, tuple[object, ...]]] = []
        self._fail = fail
        real_run = store.database.run

        def run(function, *args, **kwargs):  # type: ignore[no-untyped-def]
            if function.__name__ == "_rows":  # a read's statement: counted as the read
                return real_run(function, *args, **kwargs)
            return self._count(function, args, lambda: real_run(function, *args, **kwargs))

        monkeypatch.setattr(store.database, "run", run)
        for name in ("read_first_parts", "read_part"):
            real = getattr(sql_store, name)
            monkeypatch.setattr(sql_store, name, self._wrap(real))

    def _wrap(self, real):  # type: ignore[no-untyped-def]
        return lambda database, *args: self._count(real, args, lambda: real(database, *args))

    def _count(self, function, args, call):  # type: ignore[no-untyped-def]
        name = function.__name__
        self.calls.append((name, args))
        if (name, len(self.named(name)) - 1) in self._fail:
            return defer.fail(DatabaseError())
        return call()

    def named(self, name: str) -> list[tuple[object, ...]]:
        return [args for called, args in self.calls if called == name]


def _deliver_numbered(store: SQLStore, count: int, size: int) -> list[bytes]:
    messages = [b"Subject: %d\r\n\r\n" % n + bytes([65 + n % 26]) * size + b"\r\n"
                for n in range(count)]
    for message in messages:
        wait_for(store.deliver("alice", io.BytesIO(message)))
    return messages


def test_next_batch_is_read_while_the_client_retrieves(dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Serving the first message of a batch starts reading the next batch
    at once, without waiting for the client's next RETR; a session never
    holds more than two batches."""
    store = SQLStore(Database(parse_url(dsn)))
    messages = _deliver_numbered(store, 12, 100_000)  # five per 512 KiB batch
    runs = CountingRuns(store, monkeypatch)
    maildrop = wait_for(store.open("alice"))
    uids = list(maildrop.listing().uids)
    body = wait_for(maildrop.open_message(uids[0]))
    assert body.read() == messages[0]
    batches = runs.named("read_first_parts")
    assert len(batches) == 2  # the first, and the next one already asked for
    assert len(batches[0][0]) == len(batches[1][0]) == 5  # type: ignore[arg-type]
    for n in range(1, 12):
        body = wait_for(maildrop.open_message(uids[n]))
        assert body.read() == messages[n]
        held = sum(len(part) for part in maildrop._ahead.values())
        assert held <= 2 * READ_AHEAD
    wait_for(maildrop.abandon())
    assert len(runs.named("read_first_parts")) == 3
    assert not runs.named("read_part")


def test_a_client_skipping_about_does_not_pile_up_read_ahead(dsn: str) -> None:
    """Messages read ahead and skipped are forgotten before the session
    would hold more than two batches; they are read again if retrieved."""
    store = SQLStore(Database(parse_url(dsn)))
    messages = _deliver_numbered(store, 40, 100_000)  # five per 512 KiB batch
    maildrop = wait_for(store.open("alice"))
    uids = list(maildrop.listing().uids)
    for n in (*range(0, 40, 6), 1, 39, 2):  # forwards by sixes, then back
        body = wait_for(maildrop.open_message(uids[n]))
        assert body.read() == messages[n]
        held = sum(len(part) for part in maildrop._ahead.values())
        assert held <= 2 * READ_AHEAD
    wait_for(maildrop.abandon())


def test_long_message_reads_its_next_part_while_one_is_sent(dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A message of several parts: part 0 comes with the batch, each next
    part is asked for as soon as the one before starts going out."""
    store = SQLStore(Database(parse_url(dsn)))
    message = b"Subject: long\r\n\r\n" + b"".join(b"%07d" % n + b"y" * 69 + b"\r\n"
                                                     for n in range(12_000))  # 3.5 parts
    wait_for(store.deliver("alice", io.BytesIO(message)))
    runs = CountingRuns(store, monkeypatch)
    maildrop = wait_for(store.open("alice"))
    info = maildrop.listing()[0]
    body = wait_for(maildrop.open_message(info.uid))
    received = [wait_for(body.read(65536))]
    assert [args[1] for args in runs.named("read_part")] == [1]  # asked before it is needed
    while chunk := wait_for(body.read(65536)):
        received.append(chunk)
    body.close()
    assert b"".join(received) == message
    assert [args[1] for args in runs.named("read_part")] == [1, 2, 3]
    wait_for(maildrop.abandon())


def test_failed_read_ahead_is_read_again_when_retrieved(dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch read in the background that fails (the database went away
    meanwhile) costs nothing: the RETR of one of its messages reads it."""
    store = SQLStore(Database(parse_url(dsn)))
    messages = _deliver_numbered(store, 8, 100_000)
    runs = CountingRuns(store, monkeypatch, fail=(("read_first_parts", 1),))  # the next batch
    maildrop = wait_for(store.open("alice"))
    uids = list(maildrop.listing().uids)
    for n in range(8):
        body = wait_for(maildrop.open_message(uids[n]))
        assert body.read() == messages[n]
    wait_for(maildrop.abandon())
    assert len(runs.named("read_first_parts")) == 3


# -- the commands ---------------------------------------------------------------------------------


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def popframe(*args: str, stdin: str = "") -> Ran:
    """The console script, in this process (a subprocess each costs 0.7 s)."""
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin, sys.stdout, sys.stderr
    sys.stdin, sys.stdout, sys.stderr = io.StringIO(stdin), out, err
    try:
        status = main(list(args))
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved
    return Ran(status, out.getvalue(), err.getvalue())


@pytest.mark.external
@pytest.mark.parametrize("engine", ["sqlite", "postgresql", "mysql"])
def test_db_and_user_commands(engine: str, tmp_path: Path) -> None:
    with fresh_database(engine, tmp_path, schema=False) as dsn:
        added = popframe("user", "add", "--dsn", dsn, "alice", stdin="pw\n")
        assert added.returncode == 1 and "popframe db upgrade" in added.stderr
        done = popframe("db", "upgrade", "--dsn", dsn)
        assert done.returncode == 0 and f"to {LATEST}" in done.stdout
        assert "already at schema version" in popframe("db", "upgrade", "--dsn", dsn).stdout
        assert popframe("db", "status", "--dsn", dsn).returncode == 0
        assert popframe("user", "add", "--dsn", dsn, "alice", stdin="first\n").returncode == 0
        assert popframe("user", "add", "--dsn", dsn, "--scheme", "SCRAM-SHA-256", "--maildrop",
                        "shared", "--login-delay", "60", "bob", stdin="b\n").returncode == 0
        again = popframe("user", "add", "--dsn", dsn, "alice", stdin="x\n")
        assert again.returncode == 1 and "exists" in again.stderr
        assert popframe("user", "list", "--dsn", dsn).stdout.splitlines() == \
            ["alice", "bob maildrop=shared login_delay=60"]
        assert popframe("user", "passwd", "--dsn", dsn, "alice", stdin="second\n").returncode == 0
        stored = Database(parse_url(dsn)).call(
            lambda s: s.one("SELECT password FROM popframe_users WHERE name = ?", ("alice",)))[0]
        assert stored.startswith("{SHA512-CRYPT}$6$")
        assert popframe("user", "passwd", "--dsn", dsn, "carol", stdin="x\n").returncode == 1
        assert popframe("user", "del", "--dsn", dsn, "alice").returncode == 0
        assert popframe("user", "del", "--dsn", dsn, "alice").returncode == 1
        assert popframe("user", "list", "--dsn", dsn, "alice").returncode == 1
        empty = popframe("user", "add", "--dsn", dsn, "dave", stdin="\n")
        assert empty.returncode == 1 and "empty password" in empty.stderr


@pytest.mark.process
def test_command_on_a_database_that_is_down() -> None:
    down = subprocess.run([sys.executable, "-m", "popframe", "db", "upgrade", "--dsn",
                           "postgresql://u@127.0.0.1:9/x?connect_timeout=1"],
                          capture_output=True, text=True, timeout=60)
    assert down.returncode == 2 and "Traceback" not in down.stderr
    assert len(down.stderr.strip().splitlines()) == 1
    bad = popframe("db", "upgrade", "--dsn", "sqlite:///relative.db")
    assert bad.returncode == 1 and "absolute path" in bad.stderr

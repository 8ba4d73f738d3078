"""Two real ``twistd pop3`` processes on one database (as two hosts would
share it): the maildrop lock holds across them, and a SIGKILLed holder
frees it at once, with nothing lost and nothing half-deleted."""

from __future__ import annotations

import io
import os
import poplib
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sql_support import fresh_database
from support.clients import pop3_login

from popframe.auth.schemes import make_hash
from popframe.cli.user import add_user
from popframe.db import Database, parse_url
from popframe.stores.sql import SQLStore
from popframe.testing import ServerProcess, start_server, wait_for

pytestmark = pytest.mark.external

PASSWORD = "alice's password"


def server(url: str, cwd: Path) -> ServerProcess:
    cwd.mkdir()
    return start_server(["--listen", "tcp:0:interface=127.0.0.1", "--store", f"sql:dsn={url}",
                         "--auth", f"sql:dsn={url}", "--workers", "1"], cwd)


def counts(url: str) -> tuple[int, int, int]:
    """Messages, parts, and parts whose message is gone (must be 0)."""
    def count(session):  # type: ignore[no-untyped-def]
        return (session.one("SELECT COUNT(*) FROM popframe_messages")[0],
                session.one("SELECT COUNT(*) FROM popframe_message_parts")[0],
                session.one("SELECT COUNT(*) FROM popframe_message_parts p WHERE NOT EXISTS "
                            "(SELECT 1 FROM popframe_messages m WHERE m.id = p.message_id)")[0])

    database = Database(parse_url(url))
    try:
        return database.call(count)
    finally:
        database.close()


@pytest.fixture(params=["postgresql", "mysql"])
def mail_database(request: pytest.FixtureRequest) -> Iterator[str]:
    with fresh_database(request.param) as url:
        database = Database(parse_url(url))
        database.call(add_user, "alice", make_hash("SHA512-CRYPT", PASSWORD.encode(), rounds=1000))
        database.close()
        yield url


def fill(url: str, n: int) -> None:
    store = SQLStore(Database(parse_url(url)))
    for i in range(n):
        wait_for(store.deliver("alice", io.BytesIO(b"Subject: %d\r\n\r\nbody %d\r\n" % (i, i))))


def test_in_use_across_processes_then_sigkill(mail_database: str, tmp_path: Path) -> None:
    fill(mail_database, 5)
    first, second = server(mail_database, tmp_path / "a"), server(mail_database, tmp_path / "b")
    try:
        holder = pop3_login(first.port, password=PASSWORD)
        assert holder.stat()[0] == 5
        uids = [line.split()[1] for line in holder.uidl()[1]]
        with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
            pop3_login(second.port, password=PASSWORD)
        holder.dele(1)
        holder.dele(2)
        holder.retr(3)
        os.kill(first.pid, signal.SIGKILL)  # mid-session: no QUIT
        killed = time.monotonic()
        first.process.wait(10)
        client = None
        while client is None:  # bounded: the lock must be free within 10 s
            try:
                client = pop3_login(second.port, password=PASSWORD)
            except poplib.error_proto as error:
                assert b"[IN-USE]" in error.args[0]
                assert time.monotonic() - killed < 10, "the lock was not freed"
                time.sleep(0.005)
        freed = time.monotonic() - killed
        print(f"maildrop lock free {freed * 1000:.0f} ms after SIGKILL")
        assert client.stat()[0] == 5  # nothing lost: the marks died with the session
        assert [line.split()[1] for line in client.uidl()[1]] == uids
        client.dele(1)
        client.quit()
        assert counts(mail_database) == (4, 4, 0)
    finally:
        first.stop()
        second.stop()


def test_sigkill_during_quit_is_all_or_none(mail_database: str, tmp_path: Path) -> None:
    """QUIT with 300 deletions, the server killed as it commits, three
    times at different moments: every time all 300 are gone or none."""
    fill(mail_database, 300)
    left = 300
    for delay in (0.0, 0.005, 0.02):
        run = server(mail_database, tmp_path / f"run-{delay}")
        try:
            client = pop3_login(run.port, password=PASSWORD)
            assert client.stat()[0] == left
            for n in range(1, min(left, 100) + 1):
                client._putcmd(f"DELE {n}")  # pipelined: one write each, replies read below
            for _ in range(min(left, 100)):
                assert client._getresp().startswith(b"+OK")
            client._putcmd("QUIT")
            time.sleep(delay)  # the moment of the kill varies; nothing waits on it
            os.kill(run.pid, signal.SIGKILL)
            run.process.wait(10)
        finally:
            run.stop()
        messages, parts, orphans = counts(mail_database)
        assert messages in (left, left - min(left, 100)), messages
        assert parts == messages and orphans == 0
        left = messages

"""RFC 2449 EXPIRE: advertised (globally, per user after login, "USER"
before login when it may vary), retrievals dated at QUIT, mail removed
by the store N days after its retrieval (``popframe expire``, the
service's sweep), EXPIRE 0 deleting retrieved mail at QUIT.  Time is
a clock the test sets: no sleeping."""

from __future__ import annotations

import poplib
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import MailHome, server_args, start_server
from sql_support import fresh_database
from twisted.internet import defer

from popframe.db import Database, parse_url
from popframe.interfaces import IExpiringMaildrop, UserSettings
from popframe.protocol import Commit, MessageInfo, Reply, Session, SessionConfig, sasl
from popframe.protocol.session import Authenticate
from popframe.stores import run_synchronously
from popframe.stores.expiry import DAY, expire_maildrops, sweep
from popframe.stores.maildir import MaildirStore
from popframe.stores.mbox import MboxStore
from popframe.stores.sql import SQLStore
from popframe.testing import result_of, wait_for

pytestmark = pytest.mark.core

MESSAGES = [MessageInfo("uid-a", 10), MessageInfo("uid-b", 20), MessageInfo("uid-c", 30)]


def session_with(**config: object) -> Session:
    session = Session(SessionConfig(**config))  # type: ignore[arg-type]
    session.receive_data(b"USER alice\r\nPASS pw\r\n")
    assert session.next_event() == Reply(True, "send your password")
    assert session.next_event() == Authenticate(sasl.Password("alice", b"pw"), "USER")
    return session


def capa(session: Session) -> list[bytes]:
    return [line for line in session.capabilities() if line.startswith(b"EXPIRE")]


def retrieve(session: Session, *commands: bytes) -> None:
    for command in commands:
        session.receive_data(command + b"\r\n")
        event = session.next_event()
        if isinstance(event, Reply):
            continue
        session.message_follows()
        session.request_done()


# -- the session ---------------------------------------------------------------------


def test_capa_shows_the_servers_then_the_users_value() -> None:
    assert capa(Session()) == [b"EXPIRE NEVER"]
    assert capa(Session(SessionConfig(expire=30))) == [b"EXPIRE 30"]
    assert capa(Session(SessionConfig(expire=30, expire_per_user=True))) == [b"EXPIRE 30 USER"]
    assert capa(Session(SessionConfig(expire_per_user=True))) == [b"EXPIRE NEVER USER"]
    session = session_with(expire=30, expire_per_user=True)
    session.logged_in(MESSAGES, expire=7)
    assert capa(session) == [b"EXPIRE 7"]  # no USER after login


def test_quit_names_what_retr_sent_and_not_top_or_deleted() -> None:
    session = session_with(expire=30)
    session.logged_in(MESSAGES)
    retrieve(session, b"RETR 1", b"TOP 2 0", b"RETR 3", b"DELE 3", b"RSET", b"DELE 3")
    session.receive_data(b"QUIT\r\n")
    assert session.next_event() == Commit(("uid-c",), ("uid-a",))


def test_expire_never_names_nothing() -> None:
    session = session_with()
    session.logged_in(MESSAGES)
    retrieve(session, b"RETR 1")
    session.receive_data(b"QUIT\r\n")
    assert session.next_event() == Commit((), ())


def test_expire_0_deletes_retrieved_mail_at_quit() -> None:
    session = session_with()
    session.logged_in(MESSAGES, expire=0)
    retrieve(session, b"RETR 2", b"TOP 1 1", b"DELE 3")
    session.receive_data(b"QUIT\r\n")
    assert session.next_event() == Commit(("uid-b", "uid-c"), ())


# -- the stores ----------------------------------------------------------------------


def _maildir(tmp_path: Path) -> MaildirStore:
    for n in range(3):
        home = tmp_path / "alice"
        for sub in ("cur", "new", "tmp"):
            (home / sub).mkdir(parents=True, exist_ok=True)
        (home / "new" / f"{1700000000 + n}.M{n}.host").write_bytes(b"Subject: %d\n\nx\n" % n)
    return MaildirStore(f"{tmp_path}/%u", run_blocking=run_synchronously)


def _mbox(tmp_path: Path) -> MboxStore:
    (tmp_path / "alice").write_bytes(b"".join(
        b"From a@b Thu Jan  1 00:00:00 2024\nSubject: %d\n\nx\n\n" % n for n in range(3)))
    return MboxStore(f"{tmp_path}/%u", run_blocking=run_synchronously)


def _expire(store: object, days: int, now: float, users: list[str] | None = None,
            sources: list[object] = ()) -> dict[str, int]:  # type: ignore[assignment]
    report = wait_for(defer.Deferred.fromCoroutine(
        expire_maildrops(store, users, days, now, sources)), timeout=30)  # type: ignore[arg-type]
    return report.removed


def _check_store(store: object, t0: float) -> None:
    maildrop = wait_for(store.open("alice"), timeout=30)  # type: ignore[attr-defined]
    assert IExpiringMaildrop.providedBy(maildrop)
    uids = [m.uid for m in maildrop.listing()]
    wait_for(maildrop.record_retrieved(uids[:2], t0), timeout=30)
    wait_for(maildrop.commit([]), timeout=30)
    maildrop = wait_for(store.open("alice"), timeout=30)  # type: ignore[attr-defined]
    wait_for(maildrop.record_retrieved(uids[1:2], t0 + 5 * DAY), timeout=30)  # keeps the first
    wait_for(maildrop.commit([]), timeout=30)
    assert _expire(store, 30, t0 + 30 * DAY - 1) == {"alice": 0}
    assert _expire(store, 30, t0 + 30 * DAY + 1) == {"alice": 2}
    maildrop = wait_for(store.open("alice"), timeout=30)  # type: ignore[attr-defined]
    assert [m.uid for m in maildrop.listing()] == uids[2:]
    wait_for(maildrop.abandon(), timeout=30)
    # A user's own value (a checker's UserSettings) wins over the default.
    assert _expire(store, 30, t0 + 400 * DAY) == {"alice": 0}
    assert _expire(store, None, t0, ["alice", "bob"]) == {}  # type: ignore[arg-type]


def test_maildir_dates_and_expires(tmp_path: Path) -> None:
    store = _maildir(tmp_path)
    _check_store(store, 1_800_000_000.0)
    assert wait_for(store.users(), timeout=10) == ["alice"]


def test_mbox_dates_and_expires(tmp_path: Path) -> None:
    store = _mbox(tmp_path)
    _check_store(store, 1_800_000_000.0)
    assert wait_for(store.users(), timeout=10) == ["alice"]


@pytest.mark.external
def test_sql_dates_and_expires(tmp_path: Path) -> None:
    with fresh_database("sqlite", tmp_path) as dsn:
        store = SQLStore(Database(parse_url(dsn)))
        for n in range(3):
            wait_for(store.add_message("alice", __import__("io").BytesIO(b"Subject: %d\n\nx\n" % n)),
                     timeout=30)
        _check_store(store, 1_800_000_000.0)
        assert wait_for(store.users(), timeout=10) == ["alice"]


class Own:
    """A checker's settings: alice keeps mail 2 days."""

    def user_settings(self, user: str) -> defer.Deferred[UserSettings | None]:
        return defer.succeed(UserSettings(expire=2) if user == "alice" else None)


def test_a_users_own_expire_and_the_sweep(tmp_path: Path) -> None:
    from zope.interface import directlyProvides

    from popframe.interfaces import IUserSettings

    store = _maildir(tmp_path)
    maildrop = result_of(store.open("alice"))
    t0 = 1_800_000_000.0
    result_of(maildrop.record_retrieved([m.uid for m in maildrop.listing()][:1], t0))
    result_of(maildrop.commit([]))
    own = Own()
    directlyProvides(own, IUserSettings)
    now = [t0 + DAY]
    assert result_of(sweep(store, 30, lambda: now[0], [own])).removed == {"alice": 0}
    now[0] = t0 + 2 * DAY + 1
    assert result_of(sweep(store, 30, lambda: now[0], [own])).removed == {"alice": 1}


# -- a real server and popframe expire -------------------------------------------------


def popframe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "popframe", *args], capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.mark.process
def test_real_server_dates_retrievals_and_popframe_expire_removes_them(
        mail_home: MailHome) -> None:
    mail_home.add_user("alice", "alice password")
    for n in range(3):
        mail_home.deliver("alice", b"Subject: %d\n\nbody %d\n" % (n, n))
    with open(mail_home.passwd_file, "a") as f:
        f.write("zed:{PLAIN}pw::::::expire=0\n")
    for sub in ("cur", "new", "tmp"):
        (mail_home.maildir("zed") / sub).mkdir(parents=True, exist_ok=True)
    mail_home.deliver("zed", b"Subject: z\n\nz\n")
    mail_home.deliver("zed", b"Subject: y\n\ny\n")
    server = start_server(server_args(mail_home, "--expire", "30"), mail_home.root, listeners=2)
    try:
        client = poplib.POP3("127.0.0.1", server.port, timeout=10)
        assert client.capa()["EXPIRE"] == ["30", "USER"]
        client.user("alice")
        client.pass_("alice password")
        assert client.capa()["EXPIRE"] == ["30"]
        client.retr(1)
        client.top(2, 0)
        client.quit()
        started = time.time()
        zed = poplib.POP3("127.0.0.1", server.port, timeout=10)
        zed.user("zed")
        zed.pass_("pw")
        assert zed.capa()["EXPIRE"] == ["0"]
        zed.retr(2)
        zed.quit()
        zed = poplib.POP3("127.0.0.1", server.port, timeout=10)
        zed.user("zed")
        zed.pass_("pw")
        assert zed.stat()[0] == 1  # EXPIRE 0: gone at QUIT without DELE
        zed.quit()
    finally:
        server.stop()
    store = f"maildir:{mail_home.template}"
    done = popframe("expire", "--store", store, "--days", "30", "alice")
    assert done.returncode == 0 and "removed 0 messages" in done.stdout, done.stderr
    # 31 days on, by the store's clock: what RETR sent goes, TOP's stays.
    store_obj = MaildirStore(mail_home.template)
    assert _expire(store_obj, 30, started + 31 * DAY, ["alice"]) == {"alice": 1}
    assert len(mail_home.messages("alice")) == 2
    done = popframe("expire", "--store", store, "--days", "30", "--all")
    assert done.returncode == 0 and "of 2 users" in done.stdout, done.stderr
    refused = popframe("expire", "--store", store, "alice")
    assert refused.returncode != 0 and "--days" in refused.stderr


def test_the_service_sweeps_on_its_clock(tmp_path: Path) -> None:
    from twisted.internet.task import Clock

    from popframe.service import expiry_sweep
    from popframe.settings import Settings

    store = _maildir(tmp_path)
    maildrop = result_of(store.open("alice"))
    result_of(maildrop.record_retrieved([m.uid for m in maildrop.listing()][:2], 0.0))
    result_of(maildrop.commit([]))
    clock = Clock()
    settings = Settings(listen=(), store=store, checkers=(), idle_timeout=600,
                        preauth_timeout=None, max_connections_per_ip=0, mechanisms=(),
                        hostname="localhost", expire=1, expire_sweep=3600)
    service = expiry_sweep(settings, clock)
    service.startService()  # a pass at once: nothing is a day old yet
    try:
        assert len(_listing(store)) == 3
        clock.advance(DAY - 3600)
        assert len(_listing(store)) == 3
        clock.advance(3600 + 3600)  # the next pass after a day
        assert len(_listing(store)) == 1
    finally:
        service.stopService()


def _listing(store: MaildirStore) -> list[MessageInfo]:
    maildrop = result_of(store.open("alice"))
    try:
        return list(maildrop.listing())
    finally:
        result_of(maildrop.abandon())

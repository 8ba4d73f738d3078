"""Maildrop leases with fencing (popframe/stores/leases.py) on the real
Redis and PostgreSQL, the journal's fence, the store options, and a real
``twistd`` paused past its lease whose stale commit is refused."""

from __future__ import annotations

import os
import poplib
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import MailHome, server_args
from redis_support import RedisServer
from sql_support import fresh_database

from popframe.config import ConfigurationError
from popframe.errors import LockLost, MaildropInUse, TemporaryFailure
from popframe.stores import store_from_description
from popframe.stores.leases import LeaseLocker, LeaseServer, PostgreSQLLeases, RedisLeases
from popframe.stores.locking import FileLocker
from popframe.stores.maildir.journal import JOURNAL_NAME, delete_all
from popframe.testing import ServerProcess, start_server, wait_for

pytestmark = pytest.mark.external


@pytest.fixture
def postgresql_url() -> Iterator[str]:
    with fresh_database("postgresql", schema=False) as url:
        yield url


@pytest.fixture(params=["redis", "postgresql"])
def lease_url(request: pytest.FixtureRequest) -> Iterator[tuple[str, str, str]]:
    """``(kind, url, extra options)`` for each lease server."""
    if request.param == "redis":
        redis: RedisServer = request.getfixturevalue("redis_server")
        prefix = "popframe-test-" + uuid.uuid4().hex  # no colon: an option separator
        try:
            yield "redis", redis.url, f"lock_prefix={prefix}"
        finally:
            keys = list(redis.client.scan_iter(match=prefix + "*"))  # type: ignore[attr-defined]
            if keys:
                redis.client.delete(*keys)  # type: ignore[attr-defined]
    else:
        yield "postgresql", request.getfixturevalue("postgresql_url"), ""


def lease_server(kind: str, url: str, extra: str) -> LeaseServer:
    if kind == "redis":
        return RedisLeases(url, extra.partition("=")[2])
    return PostgreSQLLeases(url)


def test_grants_are_exclusive_and_tokens_grow(lease_url: tuple[str, str, str]) -> None:
    server = lease_server(*lease_url)
    first = server.grant("/mail/a", "one", 0.3)
    assert first is not None
    assert server.grant("/mail/a", "two", 0.3) is None  # held
    assert server.grant("/mail/b", "two", 5) is not None  # another maildrop
    assert server.renew("/mail/a", "one", first, 0.3)
    assert not server.renew("/mail/a", "two", first, 0.3)  # not the holder
    deadline = time.monotonic() + 10
    second = None
    while second is None:  # bounded: the 0.3 s lease lapses
        assert time.monotonic() < deadline
        second = server.grant("/mail/a", "two", 5)
    assert second > first
    assert not server.renew("/mail/a", "one", first, 5)  # the stale grant is fenced
    server.release("/mail/a", "one", first)  # a stale release frees nothing
    assert server.grant("/mail/a", "three", 5) is None
    server.release("/mail/a", "two", second)
    third = server.grant("/mail/a", "three", 5)
    assert third is not None and third > second


def test_locker_in_use_fence_and_release(lease_url: tuple[str, str, str]) -> None:
    locker = LeaseLocker(lease_server(*lease_url), ttl=5)
    lease = wait_for(locker.acquire("/mail/c"))
    with pytest.raises(MaildropInUse):
        wait_for(locker.acquire("/mail/c"))
    lease.fence()  # current: renewed
    wait_for(lease.release())
    wait_for(lease.release())  # idempotent
    with pytest.raises(LockLost):
        lease.fence()
    again = wait_for(locker.acquire("/mail/c"))
    assert again.token > lease.token
    wait_for(again.release())


def test_unreachable_server_is_a_temporary_failure() -> None:
    # A port nothing listens on: opens fail [SYS/TEMP], never "in use".
    locker = LeaseLocker(RedisLeases("redis://127.0.0.1:1/0", timeout=0.5), ttl=5)
    with pytest.raises(TemporaryFailure) as raised:
        wait_for(locker.acquire("/mail/d"))
    assert not isinstance(raised.value, MaildropInUse)


@pytest.mark.core
def test_journal_fence_deletes_nothing_and_withdraws(tmp_path: Path) -> None:
    for sub in ("cur", "new", "tmp"):
        (tmp_path / sub).mkdir()
    (tmp_path / "cur" / "1.a:2,").write_bytes(b"one\n")
    checks = []

    def fence_first() -> None:
        raise LockLost()

    with pytest.raises(LockLost):
        delete_all(str(tmp_path), ["cur/1.a:2,"], fence_first)

    def fence_second() -> None:  # the lease lapses while the journal is written
        checks.append(1)
        if len(checks) == 2:
            raise LockLost()

    with pytest.raises(LockLost):
        delete_all(str(tmp_path), ["cur/1.a:2,"], fence_second)
    assert (tmp_path / "cur" / "1.a:2,").exists()
    assert not (tmp_path / JOURNAL_NAME).exists()  # no later open finishes it
    delete_all(str(tmp_path), ["cur/1.a:2,"], lambda: None)
    assert not (tmp_path / "cur" / "1.a:2,").exists()


def test_store_options(redis_server: RedisServer, tmp_path: Path) -> None:
    store = store_from_description(
        f"maildir:{tmp_path}/%u:create=no:lock=redis:lock_ttl=7:lock_url={redis_server.url}")
    assert isinstance(store.locker, LeaseLocker)  # type: ignore[attr-defined]
    assert store.locker.ttl == 7  # type: ignore[attr-defined]
    assert not store.create  # type: ignore[attr-defined]
    assert isinstance(store_from_description(f"maildir:{tmp_path}/%u").locker,  # type: ignore[attr-defined]
                      FileLocker)
    for bad, problem in [
        ("lock=redis", "needs lock_url=URL"),
        ("lock_url=redis://127.0.0.1:6379/0", "lock_url needs lock=redis"),
        ("lock=redis:lock_url=http://x/", "needs a redis://"),
        ("lock=postgresql:lock_url=mysql://root@127.0.0.1/test", "postgresql://"),
        ("lock=zookeeper", "expected flock|redis|postgresql"),
        ("lock_ttl=0", "positive number"),
    ]:
        with pytest.raises(ConfigurationError, match=problem):
            store_from_description(f"maildir:{tmp_path}/%u:{bad}")


# -- a real twistd paused past its lease ---------------------------------------------------


def node(home: MailHome, name: str, store: str) -> ServerProcess:
    cwd = home.root / name
    cwd.mkdir()
    args = server_args(home)
    args[args.index("--store") + 1] = store
    return start_server(args, cwd, listeners=2)


def login(port: int) -> poplib.POP3:
    client = poplib.POP3("127.0.0.1", port, timeout=10)
    client.user("alice")
    client.pass_("alice password")
    return client


def _two_nodes(mail_home: MailHome, lease_url: tuple[str, str, str], messages: int
               ) -> tuple[ServerProcess, ServerProcess]:
    """alice with ``messages`` messages, and two nodes sharing her Maildir
    with 1.5 s leases from ``lease_url``."""
    kind, url, extra = lease_url
    mail_home.add_user("alice", "alice password")
    for i in range(messages):
        mail_home.deliver("alice", b"Subject: %d\r\n\r\nbody\r\n" % i)
    options = ":".join(filter(None, [f"lock={kind}", "lock_ttl=1.5", extra, f"lock_url={url}"]))
    store = f"maildir:{mail_home.template}:{options}"
    return node(mail_home, "a", store), node(mail_home, "b", store)


def test_paused_node_cannot_apply_a_stale_commit(
    mail_home: MailHome, lease_url: tuple[str, str, str]
) -> None:
    a, b = _two_nodes(mail_home, lease_url, 4)
    try:
        stale = login(a.port)
        assert stale.stat()[0] == 4
        stale.dele(1)
        stale.dele(2)
        with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
            login(b.port)
        os.kill(a.pid, signal.SIGSTOP)  # past its lease: no renewals
        try:
            paused = time.monotonic()
            fresh = None
            while fresh is None:  # bounded: the 1.5 s lease lapses
                try:
                    fresh = login(b.port)
                except poplib.error_proto as error:
                    assert b"[IN-USE]" in error.args[0]
                    assert time.monotonic() - paused < 15, "the lease never lapsed"
                    time.sleep(0.05)
            assert fresh.stat()[0] == 4
        finally:
            os.kill(a.pid, signal.SIGCONT)
        # The paused node wakes up, its client says QUIT: the token is stale.
        with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
            stale.quit()
        assert len(mail_home.messages("alice")) == 4
        assert not (mail_home.maildir("alice") / JOURNAL_NAME).exists()
        fresh.dele(4)
        assert fresh.quit().startswith(b"+OK")  # the current holder commits
        assert len(mail_home.messages("alice")) == 3
        assert "was lost" in a.log.read_text()
    finally:
        a.stop()
        b.stop()


def test_killed_node_frees_its_lease_within_ttl(
    mail_home: MailHome, lease_url: tuple[str, str, str]
) -> None:
    """SIGKILL releases nothing: the lease lapses after ``lock_ttl``, then
    the other node grants the maildrop, nothing deleted."""
    a, b = _two_nodes(mail_home, lease_url, 3)
    try:
        holder = login(a.port)
        holder.dele(1)
        os.kill(a.pid, signal.SIGKILL)
        killed = time.monotonic()
        a.process.wait(10)
        fresh = None
        while fresh is None:  # bounded
            try:
                fresh = login(b.port)
            except poplib.error_proto as error:
                assert b"[IN-USE]" in error.args[0]
                assert time.monotonic() - killed < 15, "the lease never lapsed"
                time.sleep(0.02)
        lapsed = time.monotonic() - killed
        print(f"{lease_url[0]} lease free {lapsed:.2f} s after SIGKILL (lock_ttl=1.5)")
        assert fresh.stat()[0] == 3
        fresh.quit()
    finally:
        a.stop()
        b.stop()

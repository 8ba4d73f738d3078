"""The Maildir store against real directories, written as Postfix and
Dovecot write them.  Blocking work runs synchronously (``run_synchronously``)
so every Deferred has fired by the time a call returns: no reactor, no
sleeping."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.threads import deferToThread
from twisted.plugin import getPlugins
from zope.interface.verify import verifyObject

from popframe.config import ConfigurationError
from popframe.errors import MaildropInUse, NoSuchMessage, TemporaryFailure
from popframe.interfaces import IMaildrop, IMaildropStore, IMaildropStoreFactory
from popframe.protocol.encoding import WireForm, wire_size
from popframe.stores import run_synchronously, store_from_description
from popframe.stores.maildir import (
    JOURNAL_NAME,
    LISTING_NAME,
    LOCK_NAME,
    SIZES_NAME,
    MaildirStore,
    MaildirStoreFactory,
    MessageVanished,
    directory,
)
from popframe.stores.maildir.remembered import LISTINGS
from popframe.stores.template import UnsafeUserName
from popframe.testing import HeldRunner, RecordingRunner, failure_of, result_of

pytestmark = pytest.mark.core

POSTFIX = b"Return-Path: <a@example.org>\nSubject: hi\n\nhello\n.\n..two dots\n"
DOVECOT = b"Subject: crlf\r\n\r\nline\r\n.dot\r\n"
NO_FINAL_NEWLINE = b"Subject: cut\n\nno newline at the end"


def wire(data: bytes) -> bytes:
    """What RETR sends, before dot-stuffing and the terminator."""
    data = re.sub(rb"\r?\n", b"\r\n", data)
    if data and not data.endswith(b"\n"):
        data += b"\r\n"
    return data


class Home:
    """A store root with helpers that write mail as MTAs do."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.template = f"{root}/%u/Maildir"
        self._sequence = 0

    def store(self, **kwargs: Any) -> MaildirStore:
        kwargs.setdefault("run_blocking", run_synchronously)
        return MaildirStore(self.template, **kwargs)

    def maildir(self, user: str = "alice") -> Path:
        return self.root / user / "Maildir"

    def make(self, user: str = "alice") -> Path:
        for sub in ("cur", "new", "tmp"):
            (self.maildir(user) / sub).mkdir(parents=True, exist_ok=True)
        return self.maildir(user)

    def postfix(self, data: bytes, user: str = "alice", when: int | None = None) -> str:
        """Postfix: LF line ends, no sizes in the name."""
        self._sequence += 1
        when = when if when is not None else 1700000000 + self._sequence
        name = f"{when}.V801I{self._sequence:x}M{self._sequence * 7}.mx"
        return self._deliver(user, name, data)

    def dovecot(self, data: bytes, user: str = "alice") -> str:
        """Dovecot LDA/LMTP: CRLF kept as given, ,S= and ,W= in the name."""
        self._sequence += 1
        name = (
            f"{1700000000 + self._sequence}.M{self._sequence}P42.mx,"
            f"S={len(data)},W={len(wire(data))}"
        )
        return self._deliver(user, name, data)

    def _deliver(self, user: str, name: str, data: bytes) -> str:
        maildir = self.make(user)
        (maildir / "tmp" / name).write_bytes(data)
        os.rename(maildir / "tmp" / name, maildir / "new" / name)
        return name

    def files(self, user: str = "alice") -> dict[str, list[str]]:
        return {sub: sorted(os.listdir(self.maildir(user) / sub)) for sub in ("new", "cur")}


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path / "mail")


def open_(store: MaildirStore, user: str = "alice") -> IMaildrop:
    return result_of(store.open(user))


def contents(maildrop: IMaildrop) -> list[bytes]:
    out = []
    for info in maildrop.listing():
        with result_of(maildrop.open_message(info.uid)) as f:
            out.append(f.read())
    return out


# -- opening --------------------------------------------------------------------


def test_interfaces(home: Home) -> None:
    store = home.store()
    verifyObject(IMaildropStore, store)
    maildrop = open_(store)
    verifyObject(IMaildrop, maildrop)
    verifyObject(IMaildropStoreFactory, MaildirStoreFactory())


def test_first_open_creates_the_maildir(home: Home) -> None:
    maildrop = open_(home.store())
    assert maildrop.listing() == []
    for sub in ("cur", "new", "tmp"):
        assert (home.maildir() / sub).is_dir()
        assert (home.maildir() / sub).stat().st_mode & 0o077 == 0
    result_of(maildrop.abandon())


def test_without_create_a_missing_maildir_is_empty_and_untouched(home: Home) -> None:
    maildrop = open_(home.store(create=False))
    assert maildrop.listing() == []
    assert not home.root.exists()
    result_of(maildrop.commit([]))


def test_blocking_work_goes_through_run_blocking(home: Home) -> None:
    recording = RecordingRunner()
    home.postfix(POSTFIX)
    maildrop = open_(home.store(run_blocking=recording))
    result_of(maildrop.commit([maildrop.listing()[0].uid]))
    assert recording.calls == ["load", "delete"]  # preparing is a few stat calls, inline
    assert MaildirStore(home.template)._run is deferToThread


def test_unsafe_user_names_are_refused_before_touching_disk(home: Home) -> None:
    store = home.store()
    for user in ["../x", "a/b", "x\x00", "x\n", "..", ".", ""]:
        failure_of(store.open(user), UnsafeUserName)
    assert not home.root.exists()


# -- sizes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [POSTFIX, DOVECOT, NO_FINAL_NEWLINE, b"", b"\n", b"\r\n", b"x", b"a\r\nb\nc\r", b".\n..\n"],
)
def test_size_is_what_retr_sends(home: Home, data: bytes) -> None:
    home.postfix(data)
    (info,) = open_(home.store()).listing()
    assert info.size == len(wire(data))


def test_dovecot_virtual_size_is_used(home: Home) -> None:
    name = home.dovecot(DOVECOT)
    os.rename(
        home.maildir() / "new" / name, home.maildir() / "new" / name.replace(",W=", ",W=9999")
    )
    (info,) = open_(home.store()).listing()
    assert info.size == int(f"9999{len(wire(DOVECOT))}")  # trusted, not recomputed


def test_sizes_of_mixed_writers(home: Home) -> None:
    home.postfix(POSTFIX)
    home.dovecot(DOVECOT)
    home.postfix(NO_FINAL_NEWLINE)
    maildrop = open_(home.store())
    assert [i.size for i in maildrop.listing()] == [
        len(wire(d)) for d in (POSTFIX, DOVECOT, NO_FINAL_NEWLINE)
    ]
    assert contents(maildrop) == [POSTFIX, DOVECOT, NO_FINAL_NEWLINE]


@given(st.binary(max_size=200), st.lists(st.integers(0, 200), max_size=6))
def test_chunked_size_matches_the_whole(data: bytes, cuts: list[int]) -> None:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    chunks = [data[a:b] for a, b in zip(points, points[1:], strict=False)]
    assert wire_size(chunks) == len(wire(data))


def test_second_open_reads_no_message(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    for n in range(5):
        home.postfix(POSTFIX + b"x" * n)
    store = home.store()
    first = [(i.size, i.wire_ready) for i in open_and_close(store)]
    assert (home.maildir() / SIZES_NAME).exists()
    forget_listings(home)  # so the listing is made again, from the size cache

    def no_reading(path: str) -> WireForm:
        raise AssertionError(f"read {path}")

    monkeypatch.setattr(directory, "file_wire_form", no_reading)
    assert [(i.size, i.wire_ready) for i in open_and_close(store)] == first


def forget_listings(home: Home, user: str = "alice") -> None:
    """As a fresh process on a maildir without popframe.listing."""
    LISTINGS.clear()
    (home.maildir(user) / LISTING_NAME).unlink(missing_ok=True)


def test_size_cache_is_pruned_and_survives_corruption(home: Home) -> None:
    names = [home.postfix(POSTFIX), home.postfix(NO_FINAL_NEWLINE)]
    store = home.store()
    maildrop = open_(store)
    result_of(maildrop.commit([maildrop.listing()[0].uid]))
    open_and_close(store)
    assert names[0] not in (home.maildir() / SIZES_NAME).read_text()
    assert names[1] in (home.maildir() / SIZES_NAME).read_text()
    (home.maildir() / SIZES_NAME).write_text("popframe-sizes 1\nbogus\0-1,2")
    forget_listings(home)
    assert [i.size for i in open_and_close(store)] == [len(wire(NO_FINAL_NEWLINE))]


def open_and_close(store: MaildirStore) -> list[Any]:
    maildrop = open_(store)
    listing = maildrop.listing()
    result_of(maildrop.abandon())
    return listing


# -- names, order and UIDL ---------------------------------------------------------


def test_new_mail_moves_to_cur_with_an_info_part(home: Home) -> None:
    name = home.postfix(POSTFIX)
    open_and_close(home.store())
    assert home.files() == {"new": [], "cur": [name + ":2,"]}


def test_dot_files_tmp_and_odd_entries_are_ignored(home: Home) -> None:
    maildir = home.make()
    (maildir / "tmp" / "1700000000.half.mx").write_bytes(b"half written")
    (maildir / "new" / ".hidden").write_bytes(b"x")
    (maildir / "cur" / ".hidden:2,").write_bytes(b"x")
    (maildir / "cur" / "1700000001.dir.mx:2,").mkdir()
    (maildir / "cur" / "1700000002.link.mx:2,").symlink_to("/etc/passwd")
    os.mkfifo(maildir / "cur" / "1700000003.fifo.mx:2,")
    name = home.postfix(POSTFIX)
    assert [i.uid for i in open_and_close(home.store())] == [name]


def test_listing_is_oldest_first_by_timestamp_then_name(home: Home) -> None:
    maildir = home.make()
    for name in ["1700000000.b.mx", "999999999.z.mx", "1700000000.a.mx", "junk", "1700000001.a.mx"]:
        (maildir / "cur" / f"{name}:2,S").write_bytes(b"x\n")
    uids = [i.uid for i in open_and_close(home.store())]
    assert uids == [
        "999999999.z.mx",
        "1700000000.a.mx",
        "1700000000.b.mx",
        "1700000001.a.mx",
        "junk",
    ]


def test_uidl_is_the_base_name_and_stable(home: Home) -> None:
    names = [home.postfix(POSTFIX), home.dovecot(DOVECOT)]
    store = home.store()
    first = [i.uid for i in open_and_close(store)]
    assert first == names
    # Another client sets flags: the name changes, the UIDL must not.
    cur = home.maildir() / "cur"
    os.rename(cur / f"{names[0]}:2,", cur / f"{names[0]}:2,RS")
    assert [i.uid for i in open_and_close(store)] == first


@pytest.mark.parametrize("separator", [";", "!"])
def test_other_info_separators(home: Home, separator: str) -> None:
    maildir = home.make()
    (maildir / "cur" / f"1700000000.x.mx{separator}2,S").write_bytes(b"x\n")
    assert [i.uid for i in open_and_close(home.store())] == ["1700000000.x.mx"]


def test_names_that_are_no_uidl_get_a_stable_digest(home: Home) -> None:
    maildir = home.make()
    odd = ["1700000000.with space.mx", "1700000001.ünïcödé.mx", "1700000002." + "x" * 80]
    for name in odd:
        (maildir / "new" / name).write_bytes(b"x\n")
    store = home.store()
    uids = [i.uid for i in open_and_close(store)]
    assert len(set(uids)) == 3
    for uid in uids:
        assert re.fullmatch(r"h[0-9a-f]{40}", uid)
    assert [i.uid for i in open_and_close(store)] == uids


def test_duplicate_base_names_get_distinct_uids(home: Home) -> None:
    cur = home.make() / "cur"
    (cur / "1700000000.x.mx:2,").write_bytes(b"one\n")
    (cur / "1700000000.x.mx:2,S").write_bytes(b"two\n")
    maildrop = open_(home.store())
    uids = [i.uid for i in maildrop.listing()]
    assert len(set(uids)) == 2 and "1700000000.x.mx" in uids
    assert sorted(contents(maildrop)) == [b"one\n", b"two\n"]
    result_of(maildrop.commit([uids[0], uids[0]]))  # a repeated uid deletes one file
    assert len(os.listdir(cur)) == 1


# -- reading ------------------------------------------------------------------------


def test_open_message_gives_the_stored_bytes(home: Home) -> None:
    home.postfix(POSTFIX)
    home.dovecot(DOVECOT)
    assert contents(open_(home.store())) == [POSTFIX, DOVECOT]


def test_open_message_after_another_client_renamed_it(home: Home) -> None:
    name = home.postfix(POSTFIX)
    maildrop = open_(home.store())
    cur = home.maildir() / "cur"
    os.rename(cur / f"{name}:2,", cur / f"{name}:2,S")
    assert contents(maildrop) == [POSTFIX]
    assert contents(maildrop) == [POSTFIX]  # found again, and remembered


def test_a_listed_message_opens_at_once(home: Home) -> None:
    """The usual RETR fires its Deferred before returning (no coroutine, no
    thread); a renamed message takes the longer way and is still found."""
    names = [home.postfix(POSTFIX), home.postfix(DOVECOT)]
    maildrop = open_(home.store())
    opened = maildrop.open_message(names[0])
    assert opened.called
    result_of(opened).close()
    cur = home.maildir() / "cur"
    os.rename(cur / f"{names[1]}:2,", cur / f"{names[1]}:2,S")
    with result_of(maildrop.open_message(names[1])) as f:
        assert f.read() == DOVECOT


def test_open_message_after_another_client_deleted_it(home: Home) -> None:
    name = home.postfix(POSTFIX)
    maildrop = open_(home.store())
    os.unlink(home.maildir() / "cur" / f"{name}:2,")
    error = failure_of(maildrop.open_message(name), MessageVanished)
    assert isinstance(error.value, TemporaryFailure)


def test_open_message_of_an_unknown_uid(home: Home) -> None:
    maildrop = open_(home.store())
    failure_of(maildrop.open_message("nope"), NoSuchMessage)


def test_message_files_are_not_followed_through_symlinks(home: Home, tmp_path: Path) -> None:
    name = home.postfix(POSTFIX)
    maildrop = open_(home.store())
    secret = tmp_path / "secret"
    secret.write_bytes(b"secret")
    path = home.maildir() / "cur" / f"{name}:2,"
    path.unlink()
    path.symlink_to(secret)
    failure_of(maildrop.open_message(name), TemporaryFailure)


# -- locking -----------------------------------------------------------------------------


def test_second_open_in_the_same_process_is_in_use(home: Home) -> None:
    store = home.store()
    maildrop = open_(store)
    failure_of(store.open("alice"), MaildropInUse)
    failure_of(home.store().open("alice"), MaildropInUse)  # a second store object too
    other = open_(store, "bob")  # other users are not affected
    result_of(maildrop.abandon())
    result_of(open_(store).abandon())
    result_of(other.abandon())


def test_lock_is_released_after_commit(home: Home) -> None:
    store = home.store()
    result_of(open_(store).commit([]))
    result_of(open_(store).abandon())


@pytest.mark.process
def test_open_is_in_use_while_another_process_holds_the_lock(home: Home) -> None:
    lock_path = home.make() / LOCK_NAME
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys\n"
            "fd = os.open(sys.argv[1], os.O_RDONLY | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "print('locked', flush=True)\n"
            "sys.stdin.read()\n",
            str(lock_path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        store = home.store()
        failure_of(store.open("alice"), MaildropInUse)
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        result_of(open_(store).abandon())
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait()


def test_abandon_is_idempotent_and_safe_after_commit(home: Home) -> None:
    store = home.store()
    maildrop = open_(store)
    result_of(maildrop.abandon())
    result_of(maildrop.abandon())
    with pytest.raises(RuntimeError):
        maildrop.commit([])
    maildrop = open_(store)
    result_of(maildrop.commit([]))
    result_of(maildrop.abandon())


def test_abandon_during_commit_waits_for_it(home: Home) -> None:
    """A client that hangs up after QUIT must not unlock a maildrop whose
    deletions are still being applied."""
    holding = HeldRunner(hold=lambda f: f.__name__ == "delete")
    name = home.postfix(POSTFIX)
    store = home.store(run_blocking=holding)
    maildrop = open_(store)
    committed = maildrop.commit([name])
    abandoned = maildrop.abandon()
    assert not abandoned.called
    failure_of(store.open("alice"), MaildropInUse)
    holding.run_all()
    assert result_of(committed) is None
    assert result_of(abandoned) is None
    assert open_(store).listing() == []


# -- snapshot and commit --------------------------------------------------------------------


def test_commit_deletes_exactly_the_marked_messages(home: Home) -> None:
    names = [home.postfix(POSTFIX), home.dovecot(DOVECOT), home.postfix(NO_FINAL_NEWLINE)]
    store = home.store()
    maildrop = open_(store)
    result_of(maildrop.commit([names[0], names[2]]))
    assert home.files() == {"new": [], "cur": [names[1] + ":2,"]}
    assert not (home.maildir() / JOURNAL_NAME).exists()
    assert [i.uid for i in open_and_close(store)] == [names[1]]


def test_commit_of_unknown_uids_is_a_bug_and_still_unlocks(home: Home) -> None:
    store = home.store()
    maildrop = open_(store)
    failure_of(maildrop.commit(["not-listed"]), ValueError)
    result_of(open_(store).abandon())


def test_mail_delivered_during_the_session_is_neither_listed_nor_deleted(home: Home) -> None:
    old = home.postfix(POSTFIX)
    store = home.store()
    maildrop = open_(store)
    late = home.postfix(DOVECOT)
    assert [i.uid for i in maildrop.listing()] == [old]
    result_of(maildrop.commit([i.uid for i in maildrop.listing()]))
    assert home.files() == {"new": [late], "cur": []}
    assert [i.uid for i in open_and_close(store)] == [late]


def test_commit_deletes_a_message_another_client_renamed(home: Home) -> None:
    name = home.postfix(POSTFIX)
    maildrop = open_(home.store())
    cur = home.maildir() / "cur"
    os.rename(cur / f"{name}:2,", cur / f"{name}:2,S")
    result_of(maildrop.commit([name]))
    assert home.files() == {"new": [], "cur": []}


def test_commit_of_a_message_already_gone_is_fine(home: Home) -> None:
    names = [home.postfix(POSTFIX), home.postfix(DOVECOT)]
    maildrop = open_(home.store())
    os.unlink(home.maildir() / "cur" / f"{names[0]}:2,")
    result_of(maildrop.commit(names))
    assert home.files() == {"new": [], "cur": []}


class Crash(BaseException):
    """The process dying at this point: no later unlink runs."""


def crash_on_unlink(monkeypatch: pytest.MonkeyPatch, after: int) -> None:
    real_unlink = os.unlink
    count = [0]

    def unlink(path: Any, *args: Any, **kwargs: Any) -> None:
        if "/cur/" in str(path):
            count[0] += 1
            if count[0] > after:
                raise Crash()
        real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)


@pytest.mark.parametrize("deleted_before_crash", [0, 1, 2])
def test_a_crash_mid_commit_is_finished_by_the_next_open(
    home: Home, monkeypatch: pytest.MonkeyPatch, deleted_before_crash: int
) -> None:
    names = [home.postfix(POSTFIX) for _ in range(4)]
    store = home.store()
    maildrop = open_(store)
    with monkeypatch.context() as patch:
        crash_on_unlink(patch, deleted_before_crash)
        failure_of(maildrop.commit(names[:3]), Crash)
    assert (home.maildir() / JOURNAL_NAME).exists()
    result_of(maildrop.abandon())  # the kernel would have dropped the lock
    assert [i.uid for i in open_and_close(store)] == [names[3]]
    assert home.files() == {"new": [], "cur": [names[3] + ":2,"]}
    assert not (home.maildir() / JOURNAL_NAME).exists()


def test_journal_finds_messages_renamed_after_the_crash(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = [home.postfix(POSTFIX), home.postfix(DOVECOT)]
    store = home.store()
    maildrop = open_(store)
    with monkeypatch.context() as patch:
        crash_on_unlink(patch, 0)
        failure_of(maildrop.commit([names[0]]), Crash)
    result_of(maildrop.abandon())
    cur = home.maildir() / "cur"
    os.rename(cur / f"{names[0]}:2,", cur / f"{names[0]}:2,S")
    assert [i.uid for i in open_and_close(store)] == [names[1]]


def test_a_crash_while_writing_the_journal_deletes_nothing(home: Home) -> None:
    names = [home.postfix(POSTFIX), home.postfix(DOVECOT)]
    store = home.store()
    open_and_close(store)
    partial = home.maildir() / f".{JOURNAL_NAME}.0123456789ab.tmp"
    partial.write_text('{"version": 1, "delete": ["cur/')
    assert [i.uid for i in open_and_close(store)] == names
    assert not partial.exists()


def test_an_unreadable_journal_is_discarded_keeping_the_mail(home: Home) -> None:
    name = home.postfix(POSTFIX)
    home.make()
    (home.maildir() / JOURNAL_NAME).write_text("garbage")
    assert [i.uid for i in open_and_close(home.store())] == [name]
    assert not (home.maildir() / JOURNAL_NAME).exists()


@pytest.mark.parametrize(
    "entry", ["cur/../../victim", "../victim", "/victim", "cur/", "tmp/x", "cur/a/b"]
)
def test_a_planted_journal_cannot_delete_outside_the_maildir(home: Home, entry: str) -> None:
    victim = home.root / "alice" / "victim"
    home.make()
    victim.write_text("precious")
    name = home.postfix(POSTFIX)
    (home.maildir() / JOURNAL_NAME).write_text(json.dumps({"version": 1, "delete": [entry]}))
    assert [i.uid for i in open_and_close(home.store())] == [name]
    assert victim.read_text() == "precious"
    assert not (home.maildir() / JOURNAL_NAME).exists()


def fail_with(
    monkeypatch: pytest.MonkeyPatch, name: str, code: int, when: Callable[[str], bool]
) -> None:
    real = getattr(os, name)

    def failing(path: Any, *args: Any, **kwargs: Any) -> Any:
        if when(str(path)):
            raise OSError(code, os.strerror(code), str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, name, failing)


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC, errno.EACCES])
def test_journal_that_cannot_be_written_deletes_nothing(
    home: Home, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    names = [home.postfix(POSTFIX), home.postfix(DOVECOT)]
    store = home.store()
    maildrop = open_(store)
    with monkeypatch.context() as patch:
        fail_with(patch, "open", code, lambda path: JOURNAL_NAME in path)
        failure_of(maildrop.commit(names), TemporaryFailure)
    assert [i.uid for i in open_and_close(store)] == names  # unlocked, all there
    assert not (home.maildir() / JOURNAL_NAME).exists()
    assert not list(home.maildir().glob(f".{JOURNAL_NAME}.*"))


def test_unlink_failure_after_the_journal_is_finished_later(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = [home.postfix(POSTFIX), home.postfix(DOVECOT), home.postfix(NO_FINAL_NEWLINE)]
    store = home.store()
    maildrop = open_(store)
    with monkeypatch.context() as patch:
        fail_with(patch, "unlink", errno.EROFS, lambda path: "/cur/" in path)
        failure_of(maildrop.commit(names[:2]), TemporaryFailure)
        # Still read-only: the commit happened, so the listing hides them.
        assert [i.uid for i in open_and_close(store)] == [names[2]]
        assert (home.maildir() / JOURNAL_NAME).exists()
    assert [i.uid for i in open_and_close(store)] == [names[2]]
    assert home.files() == {"new": [], "cur": [names[2] + ":2,"]}
    assert not (home.maildir() / JOURNAL_NAME).exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_maildir(home: Home) -> None:
    names = [home.postfix(POSTFIX), home.postfix(DOVECOT)]
    store = home.store()
    open_and_close(store)  # moves new/ to cur/, creates the lock file
    maildir = home.maildir()
    for path in (maildir, maildir / "cur", maildir / "new"):
        path.chmod(0o500)
    try:
        maildrop = open_(store)
        assert [i.uid for i in maildrop.listing()] == names
        failure_of(maildrop.commit(names), TemporaryFailure)
        assert [i.uid for i in open_and_close(store)] == names
    finally:
        for path in (maildir, maildir / "cur", maildir / "new"):
            path.chmod(0o700)


def _chattr(flag: str, *paths: Path) -> bool:
    try:
        done = subprocess.run(["chattr", flag, *map(str, paths)], capture_output=True)
    except FileNotFoundError:
        return False
    return done.returncode == 0


@pytest.mark.process
def test_immutable_maildir(home: Home) -> None:
    """A real refusal from the filesystem: ``chattr +i`` stops even root
    (needs root and a filesystem with the flag, such as ext4)."""
    names = [home.postfix(POSTFIX), home.postfix(DOVECOT)]
    store = home.store()
    open_and_close(store)
    maildir = home.maildir()
    dirs = (maildir, maildir / "cur", maildir / "new")
    if not _chattr("+i", *dirs):
        pytest.skip("chattr +i is not available here")
    try:
        maildrop = open_(store)
        failure_of(maildrop.commit(names), TemporaryFailure)
        assert [i.uid for i in open_and_close(store)] == names
    finally:
        _chattr("-i", *dirs)
    result_of(open_(store).commit(names[:1]))
    assert home.files() == {"new": [], "cur": [names[1] + ":2,"]}


def test_read_only_new_leaves_mail_in_place_and_lists_it(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = home.postfix(POSTFIX)
    maildir = home.make()
    with monkeypatch.context() as patch:
        fail_with(patch, "rename", errno.EROFS, lambda path: "/new/" in path)
        maildrop = open_(home.store())
        assert [i.uid for i in maildrop.listing()] == [name]
        assert contents(maildrop) == [POSTFIX]
        result_of(maildrop.abandon())
    assert os.listdir(maildir / "new") == [name]


# -- the plugin ----------------------------------------------------------------------------


def test_factory_is_a_plugin() -> None:
    names = {f.storeName for f in getPlugins(IMaildropStoreFactory)}
    assert "maildir" in names


def test_store_from_description(tmp_path: Path) -> None:
    store = store_from_description(f"maildir:{tmp_path}/%u/Maildir")
    assert isinstance(store, MaildirStore)
    assert store.create is True
    assert store_from_description(f"maildir:{tmp_path}/%u:create=no").create is False


@pytest.mark.parametrize(
    ("description", "problem"),
    [
        ("mdir:/var/mail/%u", "no such store 'mdir'"),
        ("maildir", "needs a path template"),
        ("maildir:", "needs a path template"),
        ("maildir:var/mail/%u", "absolute"),
        ("maildir:/var/mail/%q", "'%q'"),
        ("maildir:/var/mail/shared", "%u or %n"),
        ("maildir:/var/mail/%u:create=maybe", "create='maybe': expected yes|no"),
        ("maildir:/var/mail/%u:lock=redis", "needs lock_url=URL"),
    ],
)
def test_bad_store_descriptions(description: str, problem: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        store_from_description(description)
    assert info.value.key == "--store"
    assert problem in info.value.problem


# -- the listing cache -------------------------------------------------------------


@pytest.fixture
def settle(monkeypatch: pytest.MonkeyPatch):
    """Make every change count as a second old (instead of waiting)."""

    def settle(home: Home) -> None:
        monkeypatch.setattr(directory, "_SETTLED_NS", -(10**18))

    return settle


def count_scans(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    scans: list[str] = []
    real = directory.regular_files

    def counting(directory: str):
        scans.append(os.path.basename(directory))
        return real(directory)

    monkeypatch.setattr(directory, "regular_files", counting)
    return scans


def test_an_unchanged_maildir_is_not_listed_again(
    home: Home, monkeypatch: pytest.MonkeyPatch, settle
) -> None:
    LISTINGS.clear()
    names = [home.postfix(POSTFIX), home.postfix(DOVECOT)]
    store = home.store()
    assert [i.uid for i in open_and_close(store)] == names
    settle(home)
    assert [i.uid for i in open_and_close(store)] == names  # listed, then cached
    scans = count_scans(monkeypatch)
    assert [i.uid for i in open_and_close(store)] == names
    assert "cur" not in scans


@pytest.mark.parametrize("change", ["deliver", "rename", "unlink"])
def test_any_change_is_seen_despite_the_cache(home: Home, change: str, settle) -> None:
    LISTINGS.clear()
    names = [home.postfix(POSTFIX), home.postfix(DOVECOT)]
    store = home.store()
    open_and_close(store)
    settle(home)
    open_and_close(store)  # now cached
    cur = home.maildir() / "cur"
    if change == "deliver":
        names.append(home.postfix(POSTFIX))
    elif change == "rename":
        os.rename(cur / f"{names[0]}:2,", cur / f"{names[0]}:2,S")
    else:
        os.unlink(cur / f"{names[1]}:2,")
        names.pop()
    assert [i.uid for i in open_and_close(store)] == names


def test_a_recently_changed_maildir_is_not_cached(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    LISTINGS.clear()
    home.postfix(POSTFIX)
    store = home.store()
    open_and_close(store)  # cur/ changed just now (new -> cur)
    scans = count_scans(monkeypatch)
    open_and_close(store)
    assert "cur" in scans

"""``popframe migrate``: a maildrop the real Dovecot served (its UIDLs
recorded by a POP3 client) copied into a SQLite SQL store, an mbox and a
Maildir; killed part of the way and run again (no duplicates); checked
with ``--verify``; then a real client (poplib) through popframe sees the
UIDL list it saw from Dovecot.  Also sources written as Courier, qmail
and qpopper leave them, and the refusals."""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dovecot_support import (
    MESSAGES,
    DovecotServer,
    pop3_listing,
    popframe_serving,
    require_dovecot,
    searchable_directory,
)

pytestmark = pytest.mark.process

POPFRAME = [sys.executable, "-m", "popframe"]
#: Enough mail that a migration is still running when it is killed.
BULK = 3000


def popframe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*POPFRAME, *args], capture_output=True, text=True, timeout=600)


def bulk_message(i: int) -> bytes:
    return (b"From: sender%d@example.org\nSubject: bulk %d\n\n" % (i, i)
            + b"line of a bulk message\n" * (20 + i % 50))


class Served:
    """A maildir as Dovecot left it, and what its POP3 client saw."""

    def __init__(self, maildir: Path, seen: list[tuple[int, str, int]], passwd: Path) -> None:
        self.maildir = maildir
        self.seen = seen
        self.passwd = passwd


@pytest.fixture(scope="module")
def dovecot_maildir() -> Iterator[Served]:
    """Dovecot (default pop3_uidl_format) delivers MESSAGES with its LDA,
    finds BULK more that an MTA wrote into new/, and serves them all once."""
    require_dovecot()
    root = searchable_directory()
    dovecot = DovecotServer(root, "%08Xu%08Xv")
    try:
        dovecot.prepare()
        dovecot.start()
        for message in MESSAGES:
            dovecot.deliver(message)
        dovecot.write_new([bulk_message(i) for i in range(BULK)])
        seen = dovecot.listing()
        dovecot.stop()
        assert len(seen) == len(MESSAGES) + BULK
        yield Served(dovecot.maildir, seen, dovecot.passwd)
    finally:
        dovecot.stop()
        shutil.rmtree(root, ignore_errors=True)


def killed_part_way(command: list[str]) -> str:
    """Run ``command`` on a terminal and SIGKILL it once its progress bar
    shows 100 messages copied; what it showed."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=terminal)
    os.close(terminal)
    shown = b""
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if select.select([controller], [], [], 1)[0]:
                try:
                    shown += os.read(controller, 65536)
                except OSError:
                    break
            counts = re.findall(rb"\] +[\d.]+% (\d+) messages", shown)
            if counts and int(counts[-1]) >= 100:
                break
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        os.close(controller)
    return shown.decode()


@pytest.mark.parametrize("kind", ["sql", "mbox", "maildir"])
def test_migrate_dovecot_killed_resumed_verified_and_served(
        dovecot_maildir: Served, tmp_path: Path, kind: str) -> None:
    source = tmp_path / "source"
    shutil.copytree(dovecot_maildir.maildir, source)
    if kind == "sql":
        database = tmp_path / "mail.sqlite"
        store = f"sql:dsn=sqlite:///{database}"
        assert popframe("db", "upgrade", "--dsn", f"sqlite:///{database}").returncode == 0
    else:
        (tmp_path / kind).mkdir()
        store = f"{kind}:{tmp_path / kind}/%u"
    command = [*POPFRAME, "migrate", "--from", "dovecot", str(source), "--store", store, "alice"]

    shown = killed_part_way(command)
    assert re.search(r"\r\[#*\.*\] +\d+\.\d% \d+ messages, \d+/s, (\d+:)?\d\d:\d\d left", shown)
    partial = popframe(*command[3:], "--verify")
    assert partial.returncode == 1
    missing = partial.stdout.count("missing: UIDL")
    assert 0 < len(re.findall(r"^missing: ", partial.stdout, re.M)) <= missing
    assert "extra:" not in partial.stdout and "size:" not in partial.stdout

    again = popframe(*command[3:])
    assert again.returncode == 0, again.stderr
    assert again.stderr == ""  # not a terminal: no progress bar
    summary = re.fullmatch(r"migrated (\d+) messages \(\d+ octets\) for alice in [\d.]+ s "
                           r"\(\d+ messages/s\); (\d+) were already there; check with --verify\n",
                           again.stdout)
    assert summary, again.stdout
    copied, skipped = int(summary.group(1)), int(summary.group(2))
    assert copied + skipped == len(dovecot_maildir.seen) and skipped >= 100 and copied > 0
    done = popframe(*command[3:])
    assert "migrated 0 messages" in done.stdout

    verified = popframe(*command[3:], "--verify")
    assert verified.returncode == 0, verified.stdout
    assert verified.stdout.startswith("verified:")

    with popframe_serving(store, dovecot_maildir.passwd, tmp_path) as port:
        listing = pop3_listing(port)
    assert [uid for _, uid, _ in listing] == [uid for _, uid, _ in dovecot_maildir.seen]
    # Sizes: an mbox keeps the UIDL in an X-UIDL header of its own; and
    # Dovecot's LIST leaves out the CRLF it sends after a message without
    # a final line end (MESSAGES[3]), which popframe counts.
    expected = [(n, uid, size + (len(f"X-UIDL: {uid}\r\n") if kind == "mbox" else 0)
                 + (2 if n == 4 else 0)) for n, uid, size in dovecot_maildir.seen]
    assert listing == expected


# -- sources written as other servers leave them, without Dovecot --------------------------


def maildir_at(path: Path, names: list[str]) -> Path:
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        (path / "cur" / name).write_bytes(b"Subject: %d\n\nbody %d\n" % (i, i))
    return path


def uidls_in(store: str, tmp_path: Path) -> list[str]:
    """The target's UIDLs as popframe serves them (via --verify's listing)."""
    from popframe.stores import store_from_description
    from popframe.testing import wait_for

    maildrop = wait_for(store_from_description(store).open("alice"))
    try:
        return [info.uid for info in maildrop.listing()]
    finally:
        wait_for(maildrop.abandon())


def test_migrate_from_courier_into_maildir(tmp_path: Path) -> None:
    names = ["1167608100.111.host", "1167608200.222.host", "1167608300.333.host"]
    source = maildir_at(tmp_path / "Maildir", [n + ":2,S" for n in names])
    (source / "courierpop3dsizelist").write_text(
        f"/2 3 1167608132\n{names[1]} 20 2:1167608132\n{names[0]} 20 1:1167608132\n"
        f"{names[2]} 20\n")
    store = f"maildir:{tmp_path}/target/%u"
    result = popframe("migrate", "--from", "courier", str(source), "--store", store, "alice")
    assert result.returncode == 0, result.stderr
    assert sorted(uidls_in(store, tmp_path)) == sorted(
        ["UID1-1167608132", "UID2-1167608132", names[2]])
    assert popframe("migrate", "--from", "courier", str(source), "--store", store, "alice",
                    "--verify").returncode == 0


def test_migrate_from_qmail_maildir_and_verify_names_differences(tmp_path: Path) -> None:
    source = maildir_at(tmp_path / "Maildir", ["1000.1.host:2,", "1001.2.host"])
    store = f"mbox:{tmp_path}/%u"
    args = ["migrate", "--from", "maildir", str(source), "--store", store, "alice"]
    assert popframe(*args).returncode == 0
    assert uidls_in(store, tmp_path) == ["1000.1.host", "1001.2.host"]
    # A message the source gained since, and one only the target has.
    (source / "new" / "1002.3.host").write_bytes(b"Subject: late\n\n")
    with open(tmp_path / "alice", "ab") as mbox:
        mbox.write(b"From x@y Thu Jan  1 00:00:00 2026\nX-UIDL: stray\n\nhello\n")
    verify = popframe(*args, "--verify")
    assert verify.returncode == 1
    assert "missing: UIDL 1002.3.host (17 octets) is not in the target" in verify.stdout
    assert "extra: UIDL stray" in verify.stdout
    assert "2 differences" in verify.stderr


def test_migrate_from_mbox_keeps_x_uidl(tmp_path: Path) -> None:
    source = tmp_path / "old.mbox"
    source.write_bytes(b"From a@b Thu Jan  1 00:00:00 2026\nX-UIDL: qpopper-1\nSubject: 1\n\nx\n\n"
                       b"From a@b Thu Jan  1 00:00:00 2026\nX-UIDL: qpopper-2\nSubject: 2\n\n"
                       b">From quoted\n")
    database = tmp_path / "mail.sqlite"
    assert popframe("db", "upgrade", "--dsn", f"sqlite:///{database}").returncode == 0
    store = f"sql:dsn=sqlite:///{database}"
    assert popframe("migrate", "--from", "mbox", str(source), "--store", store,
                    "alice").returncode == 0
    assert uidls_in(store, tmp_path) == ["qpopper-1", "qpopper-2"]
    assert popframe("migrate", "--from", "mbox", str(source), "--store", store, "alice",
                    "--verify").returncode == 0


def test_uidl_a_maildir_cannot_keep_is_refused_by_name(tmp_path: Path) -> None:
    source = tmp_path / "old.mbox"
    source.write_bytes(b"From a@b Thu Jan  1 00:00:00 2026\nX-UIDL: a/b\n\nx\n")
    result = popframe("migrate", "--from", "mbox", str(source), "--store",
                      f"maildir:{tmp_path}/t/%u", "alice")
    assert result.returncode == 1
    assert "cannot keep 1 of the source's UIDLs, so nothing was copied: 'a/b' cannot be a " \
        "maildir file name" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(("args", "problem"), [
    (["--from", "imap", "SRC"], "expected dovecot[:TEMPLATE], courier, maildir, mbox or x-uidl"),
    (["--from", "dovecot", "NOWHERE"], "No such file or directory"),
    (["--from", "mbox", "DIR"], "--from mbox needs an mbox file"),
    (["--from", "dovecot", "FILE"], "--from dovecot needs a maildir"),
])
def test_bad_arguments_are_named(tmp_path: Path, args: list[str], problem: str) -> None:
    (tmp_path / "file").write_text("x")
    paths = {"SRC": str(tmp_path), "NOWHERE": str(tmp_path / "none"), "DIR": str(tmp_path),
             "FILE": str(tmp_path / "file")}
    args = [paths.get(a, a) for a in args]
    result = popframe("migrate", *args, "--store", f"maildir:{tmp_path}/%u", "alice")
    assert result.returncode != 0 and problem in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.core
def test_differences_name_each_kind() -> None:
    from popframe.cli.migrate import differences

    def stored_size(uid: str, size: int) -> int:
        return size + 1

    found = differences([("a", 10), ("b", 20), ("c", 30)], {"a": 11, "b": 20, "z": 5},
                        stored_size)
    assert found == ["size: UIDL b has 20 octets in the target, 20 in the source, 21 with "
                     "the UIDL kept",
                     "missing: UIDL c (30 octets) is not in the target",
                     "extra: UIDL z (5 octets) is only in the target"]


def test_target_in_use_is_named_and_the_command_ends(tmp_path: Path) -> None:
    from popframe.stores import store_from_description
    from popframe.testing import wait_for

    source = maildir_at(tmp_path / "Maildir", ["1000.1.host"])
    store = f"maildir:{tmp_path}/t/%u"
    session = wait_for(store_from_description(store).open("alice"))  # a POP3 session's lock
    try:
        result = popframe("migrate", "--from", "maildir", str(source), "--store", store, "alice")
    finally:
        wait_for(session.abandon())
    assert result.returncode == 1
    assert "alice: the maildrop is in use" in result.stderr and "Traceback" not in result.stderr

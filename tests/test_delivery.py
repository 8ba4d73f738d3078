"""``popframe deliver`` and the delivery core: recipients, the spool, exit
statuses, octets exactly as received, bad input, and a delivery SIGKILLed
half-way (wholly visible or not at all), into Maildir and mbox."""

from __future__ import annotations

import io
import random
import signal
import subprocess
from pathlib import Path

import pytest
from crash_support import IN_CREATE, Inotify
from delivery_support import DELIVER, Users, deliver, fetch_all, start_popframe, wire

from popframe.config import ConfigurationError
from popframe.delivery.errors import BadAddress
from popframe.delivery.lda import spool_input
from popframe.delivery.recipients import RecipientRules
from popframe.delivery.spool import Spool
from popframe.stores import run_synchronously
from popframe.stores.maildir import MaildirStore
from popframe.stores.mbox import MboxStore
from popframe.testing import result_of

pytestmark = pytest.mark.core

IN_MODIFY = 0x2

#: Inputs that are messages, however odd: each must be stored and served
#: without damage (what RETR sends equals what the octets mean on the wire).
ODD_MESSAGES = {
    "no header/body separator": b"Subject: only headers\nX-A: b\n",
    "body without headers": b"just a line of text\nand another\n",
    "bare CR": b"Subject: cr\n\nbefore\rafter\r\nmixed\rline\n",
    "NUL octets": b"Subject: nul\n\nzero\x00here\x00\n",
    "overlong line": b"Subject: long\n\n" + b"x" * 200_000 + b"\n",
    "no final newline": b"Subject: end\n\nno newline at the end",
    "From lines": b"Subject: f\n\nFrom me\n>From you\n>>From them\nFrom\n",
    "dot lines": b"Subject: d\r\n\r\n.\r\n..\r\n.x\r\n",
    "8-bit": "Subject: caf\u00e9\n\n\u00e9t\u00e9 \u2603\n".encode(),
}


# -- recipients ----------------------------------------------------------------------


@pytest.mark.parametrize(("rules", "address", "user"), [
    (RecipientRules(), "<alice@Example.ORG>", "alice@example.org"),
    (RecipientRules(), "Alice@example.org", "Alice@example.org"),
    (RecipientRules(), "alice", "alice"),
    (RecipientRules(), "<@relay.example,@other.example:bob@example.org>", "bob@example.org"),
    (RecipientRules(), '<"al ice"@example.org>', "al ice@example.org"),
    (RecipientRules("%n"), "alice@example.org", "alice"),
    (RecipientRules("%Ln"), "Alice@example.org", "alice"),
    (RecipientRules("%Lu"), "Alice@Example.org", "alice@example.org"),
    (RecipientRules(delimiter="+"), "alice+news@example.org", "alice@example.org"),
    (RecipientRules(delimiter="+-"), "alice-news@example.org", "alice@example.org"),
    (RecipientRules(delimiter="+"), "+alice@example.org", "+alice@example.org"),
    (RecipientRules(), "\uff21lice@example.org", "Alice@example.org"),  # PRECIS width mapping
])
def test_recipients_become_user_names(rules: RecipientRules, address: str, user: str) -> None:
    assert rules.user_for(address) == user


@pytest.mark.parametrize("address", ["<>", "", "@example.org", '""@example.org'])
def test_addresses_without_a_user(address: str) -> None:
    with pytest.raises(BadAddress):
        RecipientRules().user_for(address)


def test_unknown_user_format() -> None:
    with pytest.raises(ConfigurationError):
        RecipientRules("%d")


# -- the spool and the LDA's input ---------------------------------------------------


def test_spool_readers_are_independent() -> None:
    spool = Spool()
    for _ in range(100):
        spool.write(b"0123456789" * 100)
    message = spool.finish()
    first, second = message.open(), message.open()
    assert first.read(5) == b"01234"
    assert second.read(3) == b"012"
    assert first.read() == (b"0123456789" * 10000)[5:]
    second.seek(0)
    assert second.read() == b"0123456789" * 10000
    first.close()
    assert message.open().read(2) == b"01"  # closing a reader leaves the file
    message.close()


def test_spool_stops_keeping_at_the_limit() -> None:
    spool = Spool(max_size=10)
    spool.write(b"12345")
    spool.write(b"678901")
    assert spool.too_big and spool.size == 5


def test_spool_notices_blank_input() -> None:
    for data, blank in ((b"", True), (b"\r\n \t\n", True), (b"\n\nx", False)):
        spool = Spool()
        spool.write(data)
        assert spool.finish().blank is blank


def test_envelope_line_dropped_and_return_path_added() -> None:
    message = spool_input(io.BytesIO(b"From sender@x Mon Jan  1 00:00:00 2024\r\nSubject: a\r\n\r\nb\r\n"),
                          return_path="<s@example.org>")
    assert message.open().read() == b"Return-Path: <s@example.org>\r\nSubject: a\r\n\r\nb\r\n"
    plain = spool_input(io.BytesIO(b"Subject: a\n\nFrom b\n"))
    assert plain.open().read() == b"Subject: a\n\nFrom b\n"  # only a first line is an envelope


def test_return_path_must_not_break_the_header() -> None:
    with pytest.raises(ValueError):
        spool_input(io.BytesIO(b"x\n"), return_path="a@b>\r\nX-Evil: 1")


# -- popframe deliver ------------------------------------------------------------------


def _maildir_files(root: Path, user: str) -> list[Path]:
    return sorted((root / user / "Maildir" / "new").iterdir())


def test_deliver_stores_the_octets_exactly_with_sizes_in_the_name(tmp_path: Path) -> None:
    store = f"maildir:{tmp_path}/%u/Maildir"
    message = b"Subject: x\r\n\r\nline one\nline two\r\n.dot\n"
    result = deliver(store, "alice", message)
    assert result.returncode == 0, result.stderr
    [path] = _maildir_files(tmp_path, "alice")
    assert path.read_bytes() == message
    size = len(message)
    assert path.name.endswith(f",S={size},W={len(wire(message)) - 0}")
    assert not list((tmp_path / "alice" / "Maildir" / "tmp").iterdir())


@pytest.mark.process
def test_deliver_exit_statuses(tmp_path: Path) -> None:
    users = Users(tmp_path / "users")
    users.add("alice")
    store = f"maildir:{tmp_path}/mail/%u/Maildir"
    auth = ("--auth", f"passwd-file:{users.path}")
    assert deliver(store, "alice", b"Subject: a\n\nb\n", *auth).returncode == 0
    unknown = deliver(store, "mallory", b"Subject: a\n\nb\n", *auth)
    assert unknown.returncode == 67 and b"user unknown" in unknown.stderr
    assert deliver(store, "alice", b"", *auth).returncode == 65
    assert deliver(store, "alice", b"  \r\n\n", *auth).returncode == 65
    assert deliver(store, "alice", b"From x Mon Jan  1 00:00:00 2024\n").returncode == 65
    assert deliver(store, "bad/name", b"x\n").returncode == 67
    assert deliver("nosuch:/x", "alice", b"x\n").returncode == 78
    assert deliver(store, "alice", b"x\n", "--auth", "nosuch:x").returncode == 78
    usage = subprocess.run([*DELIVER, "--store", store], input=b"x\n", capture_output=True)
    assert usage.returncode == 78  # not argparse's 2, which Postfix would bounce
    (tmp_path / "file").write_text("not a directory")
    blocked = deliver(f"maildir:{tmp_path}/file/%u", "alice", b"x\n")
    assert blocked.returncode == 75, blocked.stderr
    assert deliver(f"mbox:{tmp_path}/no-such-dir/%u", "alice", b"x\n").returncode == 75
    assert len(_maildir_files(tmp_path / "mail", "alice")) == 1


def test_deliver_without_a_checker_accepts_anyone(tmp_path: Path) -> None:
    assert deliver(f"mbox:{tmp_path}/%u", "Someone@Example.org", b"x\n").returncode == 0
    assert (tmp_path / "Someone@example.org").exists()


@pytest.mark.process
@pytest.mark.parametrize("kind", ["maildir", "mbox"])
def test_odd_messages_are_stored_and_served_without_damage(tmp_path: Path, kind: str) -> None:
    users = Users(tmp_path / "users")
    users.add("alice")
    template = f"{tmp_path}/mail/%u/Maildir" if kind == "maildir" else f"{tmp_path}/mail/%u"
    (tmp_path / "mail").mkdir()
    store = f"{kind}:{template}"
    for name, message in ODD_MESSAGES.items():
        result = deliver(store, "alice", message, "--auth", f"passwd-file:{users.path}")
        assert result.returncode == 0, (name, result.stderr)
    server = start_popframe(tmp_path, store, users)
    try:
        fetched = fetch_all(server.port, "alice", users.passwords["alice"])
    finally:
        server.stop()
    assert fetched == [wire(m) for m in ODD_MESSAGES.values()]


def test_return_path_reaches_the_mbox_from_line(tmp_path: Path) -> None:
    store = f"mbox:{tmp_path}/%u"
    result = deliver(store, "alice", b"Subject: a\n\nb\n", "--return-path", "sender@example.org")
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "alice").read_bytes()
    assert text.startswith(b"From sender@example.org ")
    assert text.split(b"\n", 1)[1] == b"Return-Path: <sender@example.org>\nSubject: a\n\nb\n\n"


# -- killed half-way -------------------------------------------------------------------


def _open(store: MaildirStore | MboxStore, user: str) -> list[bytes]:
    """Every message the store lists, read whole through it."""
    maildrop = result_of(store.open(user))
    try:
        out = []
        for uid in maildrop.listing().uids:
            f = result_of(maildrop.open_message(uid))
            out.append(f.read())
            f.close()
        return out
    finally:
        result_of(maildrop.abandon())


@pytest.mark.process
@pytest.mark.parametrize("kind", ["maildir", "mbox"])
def test_sigkill_half_way_leaves_the_message_whole_or_absent(tmp_path: Path, kind: str) -> None:
    """A 20 MB delivery killed at seeded points as the store's file grows
    (inotify): every listed message is whole, and the next delivery (the
    MTA's retry) works and is whole too."""
    rng = random.Random(1313)
    message = b"Subject: big\n\n" + b"".join(
        b"line %d From here .\n" % i if i % 7 else b"From quoted %d\n" % i for i in range(700_000))
    source = tmp_path / "message"
    source.write_bytes(message)
    mail = tmp_path / "mail"
    mail.mkdir()
    if kind == "maildir":
        description = f"maildir:{mail}/%u/Maildir"
        store: MaildirStore | MboxStore = MaildirStore(f"{mail}/%u/Maildir",
                                                      run_blocking=run_synchronously)
        (mail / "alice" / "Maildir" / "tmp").mkdir(parents=True)
        watched = mail / "alice" / "Maildir" / "tmp"
    else:
        description = f"mbox:{mail}/%u"
        store = MboxStore(f"{mail}/%u", run_blocking=run_synchronously)
        watched = mail
    stored = 0
    killed_mid_write = 0
    for attempt in range(8):
        watcher = Inotify()
        watcher.watch(watched, IN_CREATE | IN_MODIFY)
        with open(source, "rb") as stdin:
            process = subprocess.Popen([*DELIVER, "--store", description, "--user", "alice"],
                                       stdin=stdin, stderr=subprocess.PIPE)
        wanted = rng.randint(1, 40)  # write events to let through
        seen = 0
        while seen < wanted and process.poll() is None:
            for _, _, name in watcher.events(5.0):
                if kind == "maildir" or name == "alice":
                    seen += 1
        watcher.close()
        finished = process.poll() is not None
        process.send_signal(signal.SIGKILL)
        process.wait()
        killed_mid_write += not finished
        messages = _open(store, "alice")
        assert all(m == message for m in messages), attempt
        assert len(messages) in (stored, stored + 1)
        stored = len(messages)
    assert killed_mid_write >= 4
    retry = subprocess.run([*DELIVER, "--store", description, "--user", "alice"],
                           input=message, capture_output=True, timeout=120)
    assert retry.returncode == 0, retry.stderr
    messages = _open(store, "alice")
    assert len(messages) == stored + 1 and all(m == message for m in messages)
    if kind == "mbox":
        assert not (mail / "alice.lock").exists()

"""A real Postfix delivering into popframe, and a real POP3 client
fetching what arrived, byte for byte: through popframe's LMTP listener
(``virtual_transport = lmtp:unix:...``), through ``mailbox_command =
popframe deliver ...``, and Postfix's own mbox delivery beside popframe's
sessions, under the same locks.  With ``CI=true`` a missing Postfix is a
failure, not a skip."""

from __future__ import annotations

import os
import re
import smtplib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from delivery_support import IN_CI, Users, fetch_all, start_popframe, wire
from postfix_support import Postfix, postfix_available, python_for

from popframe.stores.mbox.locks import dotlock_path
from popframe.testing import wait_until

pytestmark = pytest.mark.external

WAIT_SECONDS = 60
MESSAGE = (b"From: Sender <sender@example.net>\r\nTo: alice@example.test\r\nSubject: via Postfix\r\n"
           b"Message-ID: <1@example.net>\r\nDate: Thu, 04 Jan 2024 10:00:00 +0000\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
           b"Content-Transfer-Encoding: 8bit\r\n\r\n"
           b".a line starting with a dot\r\n\xc3\xa9t\xc3\xa9\r\nFrom a line that needs quoting\r\n"
           b"  folded\r\n\tlines\r\nlast line\r\n")


@pytest.fixture
def postfix_ok() -> None:
    reason = postfix_available()
    if reason is not None:
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)


def _send(postfix: Postfix, sender: str, recipients: list[str], message: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", postfix.port, timeout=30) as client:
        refused = client.sendmail(sender, recipients, message)
        assert not refused, refused


def _wait_for_mail(port: int, user: str, password: str, count: int, postfix: Postfix) -> list[bytes]:
    def arrived() -> list[bytes]:
        fetched = fetch_all(port, user, password)
        return fetched if len(fetched) >= count else []

    try:
        return wait_until(arrived, f"{count} messages for {user}", WAIT_SECONDS, 0.1)
    except AssertionError as error:
        raise AssertionError(f"{error}:\n{postfix.log()}") from None


def _postfix_headers(fetched: bytes, original: bytes) -> list[bytes]:
    """What Postfix put before the original: the header names."""
    assert fetched.endswith(wire(original))
    added = fetched[: len(fetched) - len(wire(original))]
    return re.findall(rb"(?m)^([A-Za-z-]+):", added)


@pytest.fixture
def lmtp_setup(postfix_ok: None) -> Iterator[tuple[Postfix, Path, Users]]:
    postfix = Postfix({})
    root = postfix.root / "popframe"
    root.mkdir()
    os.chmod(root, 0o711)
    users = Users(root / "users")
    users.add("alice@example.test")
    users.add("bob@example.test")
    (root / "mail").mkdir()
    yield postfix, root, users
    postfix.stop()


@pytest.mark.parametrize("kind", ["maildir", "mbox"])
def test_postfix_to_lmtp_to_pop3(lmtp_setup: tuple[Postfix, Path, Users], kind: str) -> None:
    postfix, root, users = lmtp_setup
    template = f"{root}/mail/%u" + ("/Maildir" if kind == "maildir" else "")
    server = start_popframe(root, f"{kind}:{template}", users)
    try:
        (postfix.etc / "main.cf").open("a").write(
            "virtual_mailbox_domains = example.test\n"
            f"virtual_transport = lmtp:unix:{server.lmtp_socket}\n")
        postfix.start()
        _send(postfix, "sender@example.net", ["alice@example.test", "bob@example.test"], MESSAGE)
        for user in ("alice@example.test", "bob@example.test"):
            [fetched] = _wait_for_mail(server.port, user, users.passwords[user], 1, postfix)
            assert _postfix_headers(fetched, MESSAGE) == [b"Received"]
        # An unknown user is refused at LMTP RCPT, so Postfix bounces it.
        _send(postfix, "sender@example.net", ["nobody@example.test"], MESSAGE)
        wait_until(lambda: "status=bounced" in postfix.log(), "the bounce", WAIT_SECONDS, 0.1)
        assert re.search(r"to=<nobody@example.test>.*550 5\.1\.1", postfix.log())
    finally:
        server.stop()


def test_postfix_mailbox_command_runs_popframe_deliver(postfix_ok: None) -> None:
    """Postfix's local(8) runs ``popframe deliver`` as the recipient (here
    the system user ``nobody``), which stores into a Maildir."""
    postfix = Postfix({})
    root = postfix.root
    mail = root / "mail"
    mail.mkdir()
    os.chmod(mail, 0o1777)
    users = Users(root / "users")
    users.add("nobody")
    os.chmod(users.path, 0o644)
    store = f"maildir:{mail}/%u/Maildir"
    server = None
    try:
        command = (f"{python_for('nobody', root)} -m popframe deliver --store {store} "
                   f"--user \"$USER\" --auth passwd-file:{users.path}")
        (postfix.etc / "main.cf").open("a").write(
            f"mydestination = local.test\nmailbox_command = {command}\n")
        postfix.start()
        _send(postfix, "sender@example.net", ["nobody@local.test"], MESSAGE)
        server = start_popframe(root, store, users)
        [fetched] = _wait_for_mail(server.port, "nobody", users.passwords["nobody"], 1, postfix)
        names = _postfix_headers(fetched, MESSAGE)
        assert names[:3] == [b"Return-Path", b"X-Original-To", b"Delivered-To"]
        assert not fetched.startswith(b"From ")  # the envelope line is not stored
        [stored] = list((mail / "nobody" / "Maildir" / "cur").iterdir())
        assert stored.stat().st_uid == int(subprocess.check_output(["id", "-u", "nobody"]))
    finally:
        if server is not None:
            server.stop()
        postfix.stop()


def test_postfix_appends_to_the_mbox_during_sessions(postfix_ok: None) -> None:
    """Postfix's local(8) writes the mbox (its own locks: dotlock, then
    fcntl) while popframe's sessions fetch and delete from it: nothing is
    lost, nothing is duplicated, and every lock is released."""
    postfix = Postfix({})
    root = postfix.root
    spool = root / "spool"
    spool.mkdir()
    os.chmod(spool, 0o1777)
    users = Users(root / "users")
    users.add("nobody")
    (postfix.etc / "main.cf").open("a").write(
        f"mydestination = local.test\nmail_spool_directory = {spool}\n")
    server = start_popframe(root, f"mbox:{spool}/%u", users)
    try:
        postfix.start()
        sent = 30
        for n in range(sent):
            _send(postfix, "sender@example.net", ["nobody@local.test"],
                  MESSAGE.replace(b"via Postfix", b"number-%d" % n))
        seen: list[bytes] = []
        deadline = time.monotonic() + WAIT_SECONDS
        while len(seen) < sent:
            assert time.monotonic() < deadline, (len(seen), postfix.log())
            seen += fetch_all(server.port, "nobody", users.passwords["nobody"], delete=True)
        numbers = sorted(int(re.search(rb"number-(\d+)", m).group(1)) for m in seen)
        assert numbers == list(range(sent))
        for message in seen:
            assert message.startswith(b"Return-Path: <sender@example.net>\r\n")
            assert _postfix_headers(message, MESSAGE.replace(
                b"via Postfix", re.search(rb"number-\d+", message).group(0)))
        assert not Path(dotlock_path(str(spool / "nobody"))).exists()
        assert "status=sent" in postfix.log() and "deferred" not in postfix.log()
    finally:
        server.stop()
        postfix.stop()

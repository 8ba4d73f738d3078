"""``uidl=dovecot`` against the real Dovecot: Dovecot delivers with
``dovecot-lda`` and serves the mail once over POP3 (recording whatever it
records), then stops; popframe serves the same maildir and a real client
(poplib) sees exactly the UIDLs and sizes Dovecot gave, in its order."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from dovecot_support import (
    MESSAGES,
    DovecotServer,
    dovecot_server,
    pop3_listing,
    popframe_serving,
)

pytestmark = pytest.mark.process

__all__ = ["dovecot_server"]  # the fixture, for pytest


@pytest.mark.parametrize(("dovecot_format", "extra", "uidl"), [
    ("%08Xu%08Xv", "", "dovecot"),  # Dovecot's default, popframe's default
    ("%g", "", "dovecot:%g"),  # the GUID: the file's base name in a maildir
    ("%v.%u", "", "dovecot:%v.%u"),
    # Recorded in dovecot-uidlist's P field, which wins over any template.
    ("%v.%u", "pop3_save_uidl = yes\n", "dovecot"),
])
def test_popframe_serves_the_uidls_dovecot_served(
        dovecot_server: type[DovecotServer], tmp_path: Path,
        dovecot_format: str, extra: str, uidl: str) -> None:
    dovecot = dovecot_server(dovecot_format, extra)
    dovecot.start()
    for message in MESSAGES:
        dovecot.deliver(message)
    seen = dovecot.listing()
    dovecot.stop()
    assert len(seen) == len(MESSAGES) and len({uid for _, uid, _ in seen}) == len(MESSAGES)
    if "pop3_save_uidl" in extra:
        assert (dovecot.maildir / "dovecot-uidlist").read_text().count(" P") == len(MESSAGES)

    store = f"maildir:{dovecot.maildirs}/%u/Maildir:uidl={uidl}"
    with popframe_serving(store, dovecot.passwd, tmp_path) as port:
        assert pop3_listing(port) == seen
        assert pop3_listing(port) == seen  # the second open: remembered


def test_dovecot_still_agrees_after_popframe_served_the_maildir(
        dovecot_server: type[DovecotServer], tmp_path: Path) -> None:
    """popframe moves new/ to cur/ (adding ``:2,``): Dovecot, started
    again, still knows every message by its uid, and so does popframe."""
    dovecot = dovecot_server("%08Xu%08Xv")
    dovecot.start()
    for message in MESSAGES[:3]:
        dovecot.deliver(message)
    seen = dovecot.listing()
    dovecot.stop()
    store = f"maildir:{dovecot.maildirs}/%u/Maildir:uidl=dovecot"
    with popframe_serving(store, dovecot.passwd, tmp_path) as port:
        assert pop3_listing(port) == seen
    dovecot.start()
    assert dovecot.listing() == seen


def test_messages_dovecot_marked_seen_keep_their_uidls(
        dovecot_server: type[DovecotServer], tmp_path: Path) -> None:
    """Dovecot's default ``pop3_no_flag_updates = no``: a RETR marks the
    message seen, moving it to ``cur/NAME:2,S``; its uid stays."""
    dovecot = dovecot_server("%08Xu%08Xv", "pop3_no_flag_updates = no\n")
    dovecot.start()
    for message in MESSAGES[:4]:  # (poplib refuses the fifth's 20,000-octet line)
        dovecot.deliver(message)
    seen = dovecot.listing(retrieve=True)
    dovecot.stop()
    assert all(name.endswith(":2,S") for name in os.listdir(dovecot.maildir / "cur"))
    assert len(os.listdir(dovecot.maildir / "cur")) == 4
    store = f"maildir:{dovecot.maildirs}/%u/Maildir:uidl=dovecot"
    with popframe_serving(store, dovecot.passwd, tmp_path) as port:
        assert pop3_listing(port) == seen

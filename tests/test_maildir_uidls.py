"""The Maildir store's ``uidl=`` formats (popframe/stores/maildir/uidls.py)
on maildirs written as Dovecot, Courier, qmail and old POP3 servers leave
them; tests/test_dovecot_uidls.py checks ``dovecot`` against the real
Dovecot."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.logger import LogLevel, globalLogPublisher

from popframe.config import ConfigurationError
from popframe.interfaces import IMaildrop, MessageList
from popframe.stores import run_synchronously, store_from_description
from popframe.stores.maildir import MaildirStore
from popframe.stores.maildir.remembered import LISTINGS
from popframe.stores.maildir.uidls import X_UIDL_CACHE, parse_uidl_format
from popframe.testing import result_of

pytestmark = pytest.mark.core

MESSAGE = b"Subject: hi\r\n\r\nbody\r\n"


class Maildir:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / "alice" / "Maildir"
        for sub in ("cur", "new", "tmp"):
            (self.path / sub).mkdir(parents=True, exist_ok=True)

    def add(self, name: str, data: bytes = MESSAGE, sub: str = "cur") -> str:
        (self.path / sub / name).write_bytes(data)
        return name

    def listing(self, uidl: str) -> list[tuple[str, int]]:
        maildrop = self.open(uidl)
        try:
            return [(info.uid, info.size) for info in maildrop.listing()]
        finally:
            result_of(maildrop.abandon())

    def open(self, uidl: str) -> IMaildrop:
        store = MaildirStore(f"{self.root}/%u/Maildir", uidl=uidl,
                             run_blocking=run_synchronously)
        return result_of(store.open("alice"))


@pytest.fixture
def maildir(tmp_path: Path) -> Maildir:
    LISTINGS.clear()
    return Maildir(tmp_path)


@pytest.fixture
def warnings() -> list[str]:
    seen: list[str] = []

    def observe(event: dict[str, object]) -> None:
        if event.get("log_level") is LogLevel.warn:
            seen.append(str(event.get("problem", event.get("log_format"))))

    globalLogPublisher.addObserver(observe)
    yield seen
    globalLogPublisher.removeObserver(observe)


A = "1700000001.M1P1.mx,S=20,W=20"
B = "1700000002.M2P1.mx,S=20,W=20"
C = "1700000003.M3P1.mx,S=20,W=20"


def test_dovecot_default_format_and_order(maildir: Maildir) -> None:
    maildir.add(A + ":2,S")
    maildir.add(B + ":2,")
    maildir.add(C, sub="new")
    # Dovecot's order is the IMAP uid's, not the names'.
    (maildir.path / "dovecot-uidlist").write_text(
        f"3 V1796554201 N4 Gabc\n2 :{A}\n3 W20 :{B}:2,\n1 :{C}\n")
    assert maildir.listing("dovecot") == [
        ("000000016b153dd9", 20), ("000000026b153dd9", 20), ("000000036b153dd9", 20)]


def test_dovecot_recorded_pop3_uidl_wins(maildir: Maildir) -> None:
    maildir.add(A)
    maildir.add(B)
    (maildir.path / "dovecot-uidlist").write_text(
        f"3 V7 N3\n1 P1700.1 :{A}\n2 :{B}\n")
    assert [u for u, _ in maildir.listing("dovecot:%v.%u")] == ["1700.1", "7.2"]


def test_dovecot_guid_and_file_name_variables(maildir: Maildir) -> None:
    maildir.add(A + ":2,S")
    maildir.add(B)
    (maildir.path / "dovecot-uidlist").write_text(f"3 V7 N3\n1 Gf00d :{A}\n2 :{B}\n")
    assert [u for u, _ in maildir.listing("dovecot:%g")] == ["f00d", B]
    assert [u for u, _ in maildir.listing("dovecot:%f-%05u")] == [f"{A}-00001", f"{B}-00002"]
    assert [u for u, _ in maildir.listing("dovecot:%UXv%%%Xu")] == ["7%1", "7%2"]


def test_dovecot_version_1_uidlist(maildir: Maildir) -> None:
    maildir.add(A)
    (maildir.path / "dovecot-uidlist").write_text(f"1 1234 2\n1 {A}:2,S\n")
    assert [u for u, _ in maildir.listing("dovecot")] == ["00000001000004d2"]


def test_dovecot_message_it_never_saw_keeps_popframe_uid(maildir: Maildir) -> None:
    maildir.add(A)
    maildir.add(B)
    (maildir.path / "dovecot-uidlist").write_text(f"3 V1 N2\n1 :{A}\n")
    assert [u for u, _ in maildir.listing("dovecot")] == ["0000000100000001", B]


def test_dovecot_without_uidlist_serves_popframe_uids(maildir: Maildir) -> None:
    maildir.add(A)
    assert [u for u, _ in maildir.listing("dovecot")] == [A]


def test_uidlist_change_is_seen_on_next_open(maildir: Maildir) -> None:
    maildir.add(A)
    uidlist = maildir.path / "dovecot-uidlist"
    uidlist.write_text(f"3 V1 N2\n1 :{A}\n")
    assert maildir.listing("dovecot:%v.%u") == [("1.1", 20)]
    uidlist.write_text(f"3 V1 N2\n1 Pmigrated-1 :{A}\n")
    os.utime(uidlist, ns=(1, 1))  # another size and mtime: a changed file
    assert maildir.listing("dovecot:%v.%u") == [("migrated-1", 20)]


def test_courier_sizelist(maildir: Maildir) -> None:
    maildir.add(A + ":2,S")
    maildir.add(B)
    maildir.add(C)
    (maildir.path / "courierpop3dsizelist").write_text(
        f"/2 4 1167608132\n{B} 20 2:1167608132\n{A} 20 1:1167608132\n{C} 20\n")
    assert [u for u, _ in maildir.listing("courier")] == [
        "UID1-1167608132", "UID2-1167608132", C]


def test_maildir_base_names(maildir: Maildir) -> None:
    maildir.add("1700000001.12345.host:2,S")
    maildir.add("1700000002.12346.host")
    assert [u for u, _ in maildir.listing("maildir")] == [
        "1700000001.12345.host", "1700000002.12346.host"]


def test_x_uidl_read_once_then_cached(maildir: Maildir) -> None:
    maildir.add(A, b"X-UIDL: 4a1f00\r\nSubject: x\r\n\r\nX-UIDL: not a header\r\n")
    maildir.add(B, b"Subject: none\r\n\r\nbody\r\n")
    assert [u for u, _ in maildir.listing("x-uidl")] == ["4a1f00", B]
    assert (maildir.path / X_UIDL_CACHE).exists()
    # The cache answers: a rewritten header is not read again.
    (maildir.path / "cur" / A).write_bytes(b"X-UIDL: other\r\n\r\n")
    LISTINGS.clear()
    store = MaildirStore(f"{maildir.root}/%u/Maildir", uidl="x-uidl",
                         run_blocking=run_synchronously)
    maildrop = result_of(store.open("alice"))
    assert maildrop.listing()[0].uid == "4a1f00"
    result_of(maildrop.abandon())


def test_bad_and_duplicate_uidls_are_replaced_and_logged_once(
        maildir: Maildir, warnings: list[str]) -> None:
    maildir.add(A, b"X-UIDL: has space\r\n\r\n")
    maildir.add(B, b"X-UIDL: same\r\n\r\n")
    maildir.add(C, b"X-UIDL: same\r\n\r\n")
    maildir.add("1700000004.M4P1.mx", b"X-UIDL: " + b"x" * 71 + b"\r\n\r\n")
    uids = [u for u, _ in maildir.listing("x-uidl")]
    assert uids == [A, "same", C, "1700000004.M4P1.mx"]
    assert len(warnings) == 3
    LISTINGS.clear()
    store = MaildirStore(f"{maildir.root}/%u/Maildir", uidl="x-uidl",
                         run_blocking=run_synchronously)
    result_of(result_of(store.open("alice")).abandon())
    assert len(warnings) == 3  # once


def test_replacement_that_is_taken_becomes_a_digest(maildir: Maildir) -> None:
    maildir.add(A, b"X-UIDL: " + B.encode() + b"\r\n\r\n")
    maildir.add(B, b"X-UIDL: \x01bad\r\n\r\n")
    uids = [u for u, _ in maildir.listing("x-uidl")]
    assert uids[0] == B and uids[1].startswith("h") and len(set(uids)) == 2


def test_retr_and_dele_follow_the_mapped_uids(maildir: Maildir) -> None:
    maildir.add(A, b"Subject: a\r\n\r\n")
    maildir.add(B, b"Subject: b\r\n\r\n")
    (maildir.path / "dovecot-uidlist").write_text(f"3 V1 N3\n2 :{A}\n1 :{B}\n")
    maildrop = maildir.open("dovecot")
    first, second = maildrop.listing()
    assert first.uid == "0000000100000001"
    with result_of(maildrop.open_message(first.uid)) as f:
        assert f.read() == b"Subject: b\r\n\r\n"
    result_of(maildrop.commit([first.uid]))
    assert os.listdir(maildir.path / "cur") == [A]


def test_option_in_store_string() -> None:
    store = store_from_description("maildir:/tmp/%u:uidl=dovecot:%v.%u:create=no")
    assert isinstance(store, MaildirStore)
    assert store.uidl is not None and store.uidl.template == "%v.%u"
    assert store.create is False
    assert store_from_description("maildir:/tmp/%u").uidl is None  # type: ignore[attr-defined]


@pytest.mark.parametrize("bad", ["dovecots", "courier:x", "dovecot:%m", "dovecot:", "x-uidl:%u"])
def test_bad_option_values_are_named(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_uidl_format(bad)
    with pytest.raises(ConfigurationError, match="uidl="):
        store_from_description(f"maildir:/tmp/%u:uidl={bad}")


@given(st.lists(st.one_of(st.none(), st.sampled_from(["a", "b", "", "x" * 71, "sp ace", "é"]),
                          st.text(min_size=1, max_size=80)), min_size=1, max_size=30))
def test_every_mapped_uidl_is_valid_and_unique(candidates: list[str | None]) -> None:
    """Whatever a source says, the listing obeys RFC 1939 section 7, and a
    valid UIDL given first is kept."""
    from popframe.protocol.listing import valid_uid
    from popframe.stores.maildir.listing import Snapshot
    from popframe.stores.maildir.uidls import _checked

    n = len(candidates)
    names = [f"17000000{i:02d}.M{i}.host" for i in range(n)]
    snapshot = Snapshot(MessageList(names, [10] * n, bytes(n)), [f"{m}:2," for m in names])
    mapped = _checked("/nowhere", "x-uidl", snapshot, candidates, None).listing.uids
    assert all(valid_uid(uid) for uid in mapped) and len(set(mapped)) == n
    first = [c for i, c in enumerate(candidates)
             if c is not None and valid_uid(c) and c not in candidates[:i]]
    assert all(uid in mapped for uid in first)

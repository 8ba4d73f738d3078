"""The in-memory store keeps the Maildir store's contract: a locked
snapshot, sizes as RETR sends them, deletions only at commit."""

from __future__ import annotations

import pytest
from zope.interface.verify import verifyObject

from popframe.errors import MaildropInUse, NoSuchMessage
from popframe.interfaces import IMaildrop, IMaildropStore, MessageInfo
from popframe.stores.memory import MemoryStore
from popframe.testing import failure_of, result_of

pytestmark = pytest.mark.core

LF = b"Subject: hi\n\nhello\n.\n"
CRLF = b"Subject: hi\r\n\r\nhello\r\n"
CUT = b"no final newline"


def test_interfaces() -> None:
    store = MemoryStore()
    verifyObject(IMaildropStore, store)
    verifyObject(IMaildrop, result_of(store.open("alice")))


def test_initial_messages_and_sizes() -> None:
    store = MemoryStore({"alice": [LF, ("given-uid", CRLF), CUT]})
    maildrop = result_of(store.open("alice"))
    listing = maildrop.listing()
    assert [i.size for i in listing] == [len(LF) + 4, len(CRLF), len(CUT) + 2]
    assert listing[1] == MessageInfo("given-uid", len(CRLF), wire_ready=True)
    assert len({i.uid for i in listing}) == 3
    with result_of(maildrop.open_message(listing[0].uid)) as f:
        assert f.read() == LF


def test_unknown_user_is_empty() -> None:
    assert result_of(MemoryStore().open("nobody")).listing() == []


def test_deliver_checks_uids() -> None:
    store = MemoryStore()
    store.deliver("alice", LF, uid="a")
    for bad in ["a", "", "with space", "x" * 71, "ünï"]:
        with pytest.raises(ValueError):
            store.deliver("alice", LF, uid=bad)


def test_locking() -> None:
    store = MemoryStore()
    maildrop = result_of(store.open("alice"))
    failure_of(store.open("alice"), MaildropInUse)
    result_of(result_of(store.open("bob")).abandon())
    result_of(maildrop.abandon())
    result_of(maildrop.abandon())
    result_of(result_of(store.open("alice")).commit([]))
    result_of(result_of(store.open("alice")).abandon())


def test_commit_deletes_marked_and_keeps_late_mail() -> None:
    store = MemoryStore({"alice": [LF, CRLF, CUT]})
    maildrop = result_of(store.open("alice"))
    listing = maildrop.listing()
    late = store.deliver("alice", b"late\n")
    assert late not in {i.uid for i in listing}
    result_of(maildrop.commit([listing[0].uid, listing[2].uid]))
    assert [uid for uid, _ in store.maildrops["alice"]] == [listing[1].uid, late]


def test_commit_of_unknown_uids_fails_and_unlocks() -> None:
    store = MemoryStore({"alice": [LF]})
    maildrop = result_of(store.open("alice"))
    failure_of(maildrop.commit(["nope"]), ValueError)
    assert len(store.maildrops["alice"]) == 1
    result_of(result_of(store.open("alice")).abandon())


def test_closed_maildrop_refuses_use() -> None:
    store = MemoryStore({"alice": [LF]})
    maildrop = result_of(store.open("alice"))
    uid = maildrop.listing()[0].uid
    failure_of(maildrop.open_message("nope"), NoSuchMessage)
    result_of(maildrop.abandon())
    with pytest.raises(RuntimeError):
        maildrop.open_message(uid)
    with pytest.raises(RuntimeError):
        maildrop.commit([uid])

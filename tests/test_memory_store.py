"""The in-memory store keeps the Maildir store's contract: a locked
snapshot, sizes as RETR sends them, deletions only at commit."""

from __future__ import annotations

import pytest
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from popframe.errors import MaildropInUse, NoSuchMessage
from popframe.interfaces import IMaildrop, IMaildropStore, MessageInfo
from popframe.stores.memory import MemoryStore

_t = SynchronousTestCase()
result = _t.successResultOf
failure = _t.failureResultOf

LF = b"Subject: hi\n\nhello\n.\n"
CRLF = b"Subject: hi\r\n\r\nhello\r\n"
CUT = b"no final newline"


def test_interfaces() -> None:
    store = MemoryStore()
    verifyObject(IMaildropStore, store)
    verifyObject(IMaildrop, result(store.open("alice")))


def test_initial_messages_and_sizes() -> None:
    store = MemoryStore({"alice": [LF, ("given-uid", CRLF), CUT]})
    maildrop = result(store.open("alice"))
    listing = maildrop.listing()
    assert [i.size for i in listing] == [len(LF) + 4, len(CRLF), len(CUT) + 2]
    assert listing[1] == MessageInfo("given-uid", len(CRLF), wire_ready=True)
    assert len({i.uid for i in listing}) == 3
    with result(maildrop.open_message(listing[0].uid)) as f:
        assert f.read() == LF


def test_unknown_user_is_empty() -> None:
    assert result(MemoryStore().open("nobody")).listing() == []


def test_deliver_checks_uids() -> None:
    store = MemoryStore()
    store.deliver("alice", LF, uid="a")
    for bad in ["a", "", "with space", "x" * 71, "ünï"]:
        with pytest.raises(ValueError):
            store.deliver("alice", LF, uid=bad)


def test_locking() -> None:
    store = MemoryStore()
    maildrop = result(store.open("alice"))
    failure(store.open("alice"), MaildropInUse)
    result(result(store.open("bob")).abandon())
    result(maildrop.abandon())
    result(maildrop.abandon())
    result(result(store.open("alice")).commit([]))
    result(result(store.open("alice")).abandon())


def test_commit_deletes_marked_and_keeps_late_mail() -> None:
    store = MemoryStore({"alice": [LF, CRLF, CUT]})
    maildrop = result(store.open("alice"))
    listing = maildrop.listing()
    late = store.deliver("alice", b"late\n")
    assert late not in {i.uid for i in listing}
    result(maildrop.commit([listing[0].uid, listing[2].uid]))
    assert [uid for uid, _ in store.maildrops["alice"]] == [listing[1].uid, late]


def test_commit_of_unknown_uids_fails_and_unlocks() -> None:
    store = MemoryStore({"alice": [LF]})
    maildrop = result(store.open("alice"))
    failure(maildrop.commit(["nope"]), ValueError)
    assert len(store.maildrops["alice"]) == 1
    result(result(store.open("alice")).abandon())


def test_closed_maildrop_refuses_use() -> None:
    store = MemoryStore({"alice": [LF]})
    maildrop = result(store.open("alice"))
    uid = maildrop.listing()[0].uid
    failure(maildrop.open_message("nope"), NoSuchMessage)
    result(maildrop.abandon())
    with pytest.raises(RuntimeError):
        maildrop.open_message(uid)
    with pytest.raises(RuntimeError):
        maildrop.commit([uid])

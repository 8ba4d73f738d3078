"""The store contract: what every ``IMaildropStore`` must do for the server
to be safe with mail, as tests a store's author runs against their store.

    class TestMyStore(StoreContract):
        def make_store(self, tmp_path):
            return MyStore(tmp_path / "mail")

        def add_message(self, store, user, octets):
            return my_store_delivers(store, user, octets)  # a Deferred, or None

Every test takes a fresh store from :meth:`StoreContract.make_store`.  Calls
into the store are waited for with the reactor running (so stores that
hand work to threads or talk to a database work as they will in the
server), each for at most ``timeout`` seconds.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from twisted.internet.defer import Deferred
from zope.interface.verify import verifyObject

from popframe.errors import MaildropInUse, NoSuchMessage
from popframe.interfaces import (
    IDeliverableStore,
    IMaildrop,
    IMaildropStore,
    IMessageBody,
    MessageList,
    valid_uid,
)
from popframe.protocol.encoding import wire_form, wire_size
from popframe.testing.contracts._base import Contract

__all__ = ["SAMPLE_MESSAGES", "StoreContract"]

#: Messages whose size as sent differs from their stored size in every
#: way a store can get wrong (line ends, dot-stuffing is not counted, the
#: final CRLF), by name.
SAMPLE_MESSAGES: dict[str, bytes] = {
    "lf": b"Subject: lf\n\nline one\nline two\n",
    "crlf": b"Subject: crlf\r\n\r\nline one\r\nline two\r\n",
    "mixed": b"Subject: mixed\r\n\nline one\nline two\r\n",
    "no-final-newline": b"Subject: cut\n\nno final newline",
    "dot-lines": b"Subject: dots\n\n.\n..two dots\n.one\n.",
    "empty-body": b"Subject: nothing\n\n",
    "bare-cr": b"Subject: cr\n\nbare\rcarriage return\r",
    "empty": b"",
}

ALICE = "alice"
BOB = "bob"


def _digest(octets: bytes) -> str:
    """Big messages compare by digest: a failure prints two lines, not 5 MB."""
    return f"{len(octets)} octets, sha256 {hashlib.sha256(octets).hexdigest()}"


class StoreContract(Contract):
    """Subclass this in a test file (named ``Test...``) to run the store
    contract against your store.  Implement :meth:`make_store`; implement
    :meth:`add_message` unless the store provides ``IDeliverableStore``;
    implement :meth:`break_deletions` to have the all-or-none commit
    checked under a failure (skipped otherwise).
    """

    #: The big message's size: bigger than any sane chunk, so a store that
    #: returns a body in one piece shows.
    big_message_size = 5 * 1024 * 1024

    # -- the hooks an author provides ---------------------------------------------

    def make_store(self, tmp_path: Path) -> IMaildropStore:
        """A fresh, empty store (``tmp_path``: a directory of this test's
        own)."""
        raise NotImplementedError("implement make_store(self, tmp_path) -> IMaildropStore")

    def add_message(self, store: IMaildropStore, user: str, octets: bytes) -> Deferred[Any] | None:
        """Add a message of exactly ``octets`` to ``user``'s maildrop, as an
        MTA would: it is the newest (listed last).  May return a Deferred
        (or be a coroutine).  Default: ``store.deliver`` when the store
        provides ``IDeliverableStore``."""
        if IDeliverableStore.providedBy(store):
            deliver: Deferred[None] = store.deliver(user, io.BytesIO(octets))
            return deliver
        raise NotImplementedError(
            "implement add_message(self, store, user, octets): the store does not "
            "provide IDeliverableStore")

    def break_deletions(self, store: IMaildropStore, monkeypatch: pytest.MonkeyPatch) -> None:
        """Arrange that the next commit with deletions fails part-way
        through applying them (a disk error after the first of several
        deletions, a dropped database connection), e.g. with
        ``monkeypatch``.  Not implemented: that test is skipped."""
        pytest.skip("break_deletions is not implemented for this store")

    # -- helpers ------------------------------------------------------------------

    @pytest.fixture
    def store(self, tmp_path: Path) -> IMaildropStore:
        """Each test's own fresh store."""
        return self.make_store(tmp_path)

    def add(self, store: IMaildropStore, user: str, *messages: bytes) -> None:
        """Add ``messages`` in this order (the last is the newest)."""
        for octets in messages:
            self.settle(self.add_message(store, user, octets))

    def open(self, store: IMaildropStore, user: str = ALICE) -> IMaildrop:
        """Open and lock ``user``'s maildrop, as a login does."""
        maildrop: IMaildrop = self.wait(store.open(user))
        return maildrop

    def listed(self, maildrop: IMaildrop) -> MessageList:
        """The listing by columns, whatever sequence the store gave."""
        return MessageList.of(maildrop.listing())

    def read(self, maildrop: IMaildrop, uid: str, size: int = 4096) -> bytes:
        """A message's octets, read ``size`` at a time as the server reads them."""
        return self.read_body(self.wait(maildrop.open_message(uid)), size)

    def read_body(
        self, body: BinaryIO | IMessageBody, size: int, limit: int | None = None
    ) -> bytes:
        """Read an opened message to its end (or ``limit`` octets), checking
        each chunk against the asked ``size``; then close it."""
        chunks: list[bytes] = []
        got = 0
        try:
            while limit is None or got < limit:
                if IMessageBody.providedBy(body):
                    chunk = self.wait(body.read(size))
                    assert isinstance(chunk, bytes), f"read() fired with {chunk!r}, not bytes"
                else:
                    chunk = body.read(size)
                assert len(chunk) <= size, f"asked for {size} octets, got {len(chunk)}"
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
        finally:
            body.close()
        return b"".join(chunks)

    def contents(self, store: IMaildropStore, user: str = ALICE) -> list[bytes]:
        """Every message of ``user``, oldest first, from a session of its own."""
        maildrop = self.open(store, user)
        try:
            return [self.read(maildrop, uid) for uid in self.listed(maildrop).uids]
        finally:
            self.wait(maildrop.abandon())

    # -- opening --------------------------------------------------------------------

    def test_store_and_maildrop_provide_their_interfaces(self, store: IMaildropStore) -> None:
        verifyObject(IMaildropStore, store)
        maildrop = self.open(store)
        verifyObject(IMaildrop, maildrop)
        self.wait(maildrop.abandon())

    def test_a_user_without_mail_has_an_empty_maildrop(self, store: IMaildropStore) -> None:
        maildrop = self.open(store, "nobody")
        assert len(maildrop.listing()) == 0
        self.wait(maildrop.commit([]))
        self.add(store, ALICE, SAMPLE_MESSAGES["lf"])
        maildrop = self.open(store, BOB)  # someone else's mail is not bob's
        assert len(maildrop.listing()) == 0
        self.wait(maildrop.abandon())

    def test_listing_is_oldest_first(self, store: IMaildropStore) -> None:
        messages = [b"Subject: %d\n\nmessage %d\n" % (n, n) for n in range(5)]
        self.add(store, ALICE, *messages)
        assert self.contents(store) == messages

    # -- sizes and uids -------------------------------------------------------------

    @pytest.mark.parametrize("name", list(SAMPLE_MESSAGES))
    def test_size_is_the_octets_retr_sends(self, store: IMaildropStore, name: str) -> None:
        octets = SAMPLE_MESSAGES[name]
        self.add(store, ALICE, octets)
        maildrop = self.open(store)
        [info] = list(maildrop.listing())
        assert info.size == wire_size(octets)
        if info.wire_ready:  # RETR would send the stored octets unchanged
            assert wire_form(octets).ready, "listed as wire-ready, but needs encoding"
        assert self.read(maildrop, info.uid) == octets
        self.wait(maildrop.abandon())

    def test_uids_follow_rfc_1939(self, store: IMaildropStore) -> None:
        same = SAMPLE_MESSAGES["lf"]  # identical messages still get their own uids
        self.add(store, ALICE, same, same, *SAMPLE_MESSAGES.values())
        maildrop = self.open(store)
        uids = list(self.listed(maildrop).uids)
        assert len(uids) == len(SAMPLE_MESSAGES) + 2
        for uid in uids:
            assert valid_uid(uid), f"{uid!r}: not 1 to 70 characters in 0x21..0x7E"
        assert len(set(uids)) == len(uids), f"duplicate uids: {uids}"
        self.wait(maildrop.abandon())

    def test_uids_are_the_same_in_the_next_session(self, store: IMaildropStore) -> None:
        self.add(store, ALICE, *SAMPLE_MESSAGES.values())
        first = self.open(store)
        listing = self.listed(first)
        self.wait(first.abandon())
        second = self.open(store)
        assert list(self.listed(second).uids) == list(listing.uids)
        self.wait(second.commit([]))
        third = self.open(store)
        assert list(self.listed(third).uids) == list(listing.uids)
        assert list(self.listed(third).sizes) == list(listing.sizes)
        self.wait(third.abandon())

    def test_uids_are_not_reused_after_a_deletion(self, store: IMaildropStore) -> None:
        messages = [SAMPLE_MESSAGES["lf"], SAMPLE_MESSAGES["crlf"], SAMPLE_MESSAGES["mixed"]]
        self.add(store, ALICE, *messages)
        maildrop = self.open(store)
        before = list(self.listed(maildrop).uids)
        self.wait(maildrop.commit([before[0]]))
        self.add(store, ALICE, messages[0])  # the same octets as the deleted one
        maildrop = self.open(store)
        after = list(self.listed(maildrop).uids)
        self.wait(maildrop.abandon())
        assert after[:2] == before[1:]
        assert after[2] not in before, f"{after[2]!r} was the uid of another message"

    # -- reading --------------------------------------------------------------------

    @pytest.mark.parametrize("size", [1, 7, 4096])
    def test_open_message_gives_the_stored_octets(self, store: IMaildropStore, size: int) -> None:
        self.add(store, ALICE, *SAMPLE_MESSAGES.values())
        maildrop = self.open(store)
        read = [self.read(maildrop, uid, size) for uid in self.listed(maildrop).uids]
        assert read == list(SAMPLE_MESSAGES.values())
        self.wait(maildrop.abandon())

    def test_a_message_closed_before_its_end_can_be_read_again(self, store: IMaildropStore) -> None:
        self.add(store, ALICE, SAMPLE_MESSAGES["lf"])
        maildrop = self.open(store)
        [uid] = self.listed(maildrop).uids
        body = self.wait(maildrop.open_message(uid))
        assert self.read_body(body, 5, limit=5) == SAMPLE_MESSAGES["lf"][:5]  # then closed
        assert self.read(maildrop, uid) == SAMPLE_MESSAGES["lf"]
        self.wait(maildrop.commit([]))

    def test_an_unknown_uid_is_no_such_message(self, store: IMaildropStore) -> None:
        self.add(store, ALICE, SAMPLE_MESSAGES["lf"])
        maildrop = self.open(store)
        with pytest.raises(NoSuchMessage):
            self.wait(maildrop.open_message("no-such-uid"))
        self.wait(maildrop.abandon())

    def test_a_big_message_streams_in_chunks(self, store: IMaildropStore) -> None:
        line = b"x" * 998 + b"\n"
        octets = b"Subject: big\n\n" + line * (self.big_message_size // len(line))
        self.add(store, ALICE, octets)
        maildrop = self.open(store)
        [info] = list(maildrop.listing())
        assert info.size == wire_size(octets)
        body = self.wait(maildrop.open_message(info.uid))
        if IMessageBody.providedBy(body):
            chunks = []
            while chunk := self.wait(body.read(65536)):
                assert 0 < len(chunk) <= 65536, f"asked for 65536 octets, got {len(chunk)}"
                chunks.append(chunk)
            body.close()
            assert _digest(b"".join(chunks)) == _digest(octets)
        else:
            assert _digest(self.read_body(body, 65536)) == _digest(octets)
        self.wait(maildrop.abandon())

    # -- the snapshot ---------------------------------------------------------------

    def test_mail_added_after_open_is_invisible_and_kept(self, store: IMaildropStore) -> None:
        old, new = SAMPLE_MESSAGES["lf"], SAMPLE_MESSAGES["crlf"]
        self.add(store, ALICE, old)
        maildrop = self.open(store)
        listing = list(maildrop.listing())
        self.add(store, ALICE, new)
        assert list(maildrop.listing()) == listing
        self.wait(maildrop.commit([info.uid for info in listing]))
        assert self.contents(store) == [new]

    # -- commit and abandon ---------------------------------------------------------

    def test_commit_without_deletions_keeps_everything(self, store: IMaildropStore) -> None:
        messages = list(SAMPLE_MESSAGES.values())
        self.add(store, ALICE, *messages)
        self.wait(self.open(store).commit([]))
        assert self.contents(store) == messages

    def test_commit_deletes_exactly_the_given_uids(self, store: IMaildropStore) -> None:
        messages = [b"Subject: %d\n\n%d\n" % (n, n) for n in range(5)]
        self.add(store, ALICE, *messages)
        maildrop = self.open(store)
        uids = list(self.listed(maildrop).uids)
        self.wait(maildrop.commit([uids[3], uids[0], uids[1]]))
        maildrop = self.open(store)
        assert list(self.listed(maildrop).uids) == [uids[2], uids[4]]
        self.wait(maildrop.abandon())
        assert self.contents(store) == [messages[2], messages[4]]

    def test_commit_of_every_message_empties_the_maildrop(self, store: IMaildropStore) -> None:
        self.add(store, ALICE, *SAMPLE_MESSAGES.values())
        maildrop = self.open(store)
        self.wait(maildrop.commit(list(self.listed(maildrop).uids)))
        assert self.contents(store) == []

    def test_a_failed_commit_deletes_all_or_none(
        self, store: IMaildropStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        messages = [b"Subject: %d\n\n%d\n" % (n, n) for n in range(4)]
        self.add(store, ALICE, *messages)
        maildrop = self.open(store)
        uids = list(self.listed(maildrop).uids)
        self.break_deletions(store, monkeypatch)
        with pytest.raises(Exception):  # noqa: B017, PT011  (whichever the store raises)
            self.wait(maildrop.commit(uids[:3]))
        monkeypatch.undo()
        left = self.contents(store)  # and the lock was released
        assert left in (messages, messages[3:]), "a failed commit deleted some, not all or none"

    def test_abandon_deletes_nothing_and_can_be_repeated(self, store: IMaildropStore) -> None:
        messages = list(SAMPLE_MESSAGES.values())
        self.add(store, ALICE, *messages)
        maildrop = self.open(store)
        self.read(maildrop, self.listed(maildrop).uids[0])
        self.wait(maildrop.abandon())
        self.wait(maildrop.abandon())
        assert self.contents(store) == messages

    def test_abandon_after_commit_changes_nothing(self, store: IMaildropStore) -> None:
        messages = [SAMPLE_MESSAGES["lf"], SAMPLE_MESSAGES["crlf"]]
        self.add(store, ALICE, *messages)
        maildrop = self.open(store)
        self.wait(maildrop.commit([self.listed(maildrop).uids[0]]))
        self.wait(maildrop.abandon())
        self.wait(maildrop.abandon())
        assert self.contents(store) == messages[1:]

    # -- the lock -------------------------------------------------------------------

    def test_a_second_open_is_refused_at_once_while_the_first_holds_it(
        self, store: IMaildropStore
    ) -> None:
        self.add(store, ALICE, SAMPLE_MESSAGES["lf"])
        first = self.open(store)
        with pytest.raises(MaildropInUse):
            self.wait(store.open(ALICE))  # waiting for the lock would time out here
        other = self.open(store, BOB)  # another user's maildrop is not locked
        self.wait(other.abandon())
        [uid] = self.listed(first).uids  # the first session goes on unharmed
        assert self.read(first, uid) == SAMPLE_MESSAGES["lf"]
        self.wait(first.commit([uid]))
        assert self.contents(store) == []

    def test_the_lock_can_be_taken_again_after_abandon(self, store: IMaildropStore) -> None:
        self.add(store, ALICE, SAMPLE_MESSAGES["lf"])
        self.wait(self.open(store).abandon())
        self.wait(self.open(store).abandon())

    def test_the_lock_can_be_taken_again_after_commit(self, store: IMaildropStore) -> None:
        self.add(store, ALICE, SAMPLE_MESSAGES["lf"], SAMPLE_MESSAGES["crlf"])
        maildrop = self.open(store)
        self.wait(maildrop.commit([self.listed(maildrop).uids[0]]))
        maildrop = self.open(store)
        self.wait(maildrop.commit([]))
        self.wait(self.open(store).abandon())

    # -- delivery -------------------------------------------------------------------

    def test_delivery_stores_exactly_the_octets_given(self, store: IMaildropStore) -> None:
        if not IDeliverableStore.providedBy(store):
            pytest.skip("the store does not provide IDeliverableStore")
        octets = b"Subject: binary\n\nNUL \x00, bare CR \r, \xff\xfe high bits\r\n.\n\x00"
        message = io.BytesIO(octets)
        self.wait(store.deliver(ALICE, message))
        assert not message.closed, "deliver() must not close the file it was given"
        maildrop = self.open(store)
        [info] = list(maildrop.listing())
        assert info.size == wire_size(octets)
        assert self.read(maildrop, info.uid) == octets
        self.wait(maildrop.abandon())

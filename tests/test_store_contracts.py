"""The store contract (popframe.testing.contracts) run against popframe's
own stores: the memory store, and the Maildir store with its real thread
hand-off (``deferToThread``), not ``run_synchronously``."""

from __future__ import annotations

import errno
import itertools
import os
from pathlib import Path

import pytest

from popframe.stores.maildir import MaildirStore, journal
from popframe.stores.memory import MemoryStore
from popframe.testing.contracts import StoreContract

pytestmark = pytest.mark.core


class TestMemoryStore(StoreContract):
    def make_store(self, tmp_path: Path) -> MemoryStore:
        return MemoryStore()

    def add_message(self, store: MemoryStore, user: str, octets: bytes) -> None:  # type: ignore[override]
        store.deliver(user, octets)


class TestMaildirStore(StoreContract):
    #: Delivery numbers: names sort in delivery order and never repeat.
    _sequence = itertools.count(1)

    def make_store(self, tmp_path: Path) -> MaildirStore:
        return MaildirStore(f"{tmp_path}/%u/Maildir")

    def add_message(self, store: MaildirStore, user: str, octets: bytes) -> None:  # type: ignore[override]
        """As an MTA delivers: written in tmp/, renamed into new/."""
        maildir = Path(store.template.resolve(user))
        for sub in ("tmp", "new", "cur"):
            (maildir / sub).mkdir(parents=True, exist_ok=True)
        n = next(self._sequence)
        name = f"{1700000000 + n}.M{n:06d}P{os.getpid()}.contract"
        (maildir / "tmp" / name).write_bytes(octets)
        os.rename(maildir / "tmp" / name, maildir / "new" / name)

    def break_deletions(self, store: MaildirStore, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[override]
        """The disk fails after the first unlink of a commit."""
        def first_then_fail(maildir: str, relatives: list[str]) -> None:
            os.unlink(os.path.join(maildir, relatives[0]))
            raise OSError(errno.EIO, "injected I/O error", relatives[1])

        monkeypatch.setattr(journal, "_apply", first_then_fail)


class TestMaildirStoreHiding(TestMaildirStore):
    """The same contract with ``dele=hide``: DELE flags the file
    ``$POP3Deleted`` (a Dovecot keyword letter) and POP3 stops listing it."""

    def make_store(self, tmp_path: Path) -> MaildirStore:
        return MaildirStore(f"{tmp_path}/%u/Maildir", dele="hide")

    def break_deletions(self, store: MaildirStore, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[override]
        """The disk fails after the first rename of a commit."""
        real = journal._hide

        def first_then_fail(maildir: str, relatives: list[str], letter: str | None = None) -> None:
            real(maildir, relatives[0], letter or "a")
            raise OSError(errno.EIO, "injected I/O error", relatives[1])

        monkeypatch.setattr(journal, "_apply", first_then_fail)

    def test_hidden_messages_stay_on_disk_flagged(self, store: MaildirStore) -> None:
        self.add(store, "alice", b"Subject: 1\n\none\n", b"Subject: 2\n\ntwo\n")
        maildrop = self.open(store)
        first = list(self.listed(maildrop).uids)[0]
        self.wait(maildrop.commit([first]))
        maildir = Path(store.template.resolve("alice"))
        assert (maildir / "dovecot-keywords").read_text() == "0 $POP3Deleted\n"
        names = sorted(p.name for p in (maildir / "cur").iterdir())
        assert names == [f"{first}:2,a", names[1]] and names[1].endswith(":2,")
        assert self.contents(store) == [b"Subject: 2\n\ntwo\n"]
        # The letter is the keyword's in dovecot-keywords, as Dovecot has it.
        (maildir / "dovecot-keywords").write_text("0 Junk\n1 $POP3Deleted\n")
        maildrop = self.open(store)
        uids = list(self.listed(maildrop).uids)
        assert len(uids) == 2  # 'a' is Junk now
        self.wait(maildrop.commit(uids[1:]))
        assert sorted(p.name for p in (maildir / "cur").iterdir())[1].endswith(":2,b")
        assert self.contents(store) == [b"Subject: 1\n\none\n"]

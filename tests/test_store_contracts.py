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

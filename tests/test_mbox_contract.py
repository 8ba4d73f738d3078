"""The store contract (popframe.testing.contracts) run against the mbox
store, with its real thread hand-off."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from popframe.stores.mbox import MboxStore
from popframe.stores.mbox import mailbox as mailbox_module
from popframe.testing.contracts import StoreContract

pytestmark = pytest.mark.core


class TestMboxStore(StoreContract):
    def make_store(self, tmp_path: Path) -> MboxStore:
        return MboxStore(f"{tmp_path}/%u")

    def break_deletions(self, store: MboxStore, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[override]
        """The disk fails while the new file is being written."""
        calls = []
        real_copy = mailbox_module._copy

        def failing_copy(source: int, target: int, start: int, end: int, position: int) -> int:
            calls.append(start)
            if len(calls) > 1:
                raise OSError(errno.EIO, "injected I/O error")
            return real_copy(source, target, start, end, position)

        monkeypatch.setattr(mailbox_module, "_copy", failing_copy)


class TestMboxStoreHiding(TestMboxStore):
    """The same contract with ``dele=hide``: the message stays in the mbox,
    its UIDL noted in ``.NAME.popframe-hidden``."""

    def make_store(self, tmp_path: Path) -> MboxStore:
        return MboxStore(f"{tmp_path}/%u", dele="hide")

    def break_deletions(self, store: MboxStore, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[override]
        """The disk fails writing the map (one atomic write: none hidden)."""
        def failing(path: str, values: dict[str, float]) -> None:
            raise OSError(errno.EIO, "injected I/O error")

        monkeypatch.setattr(mailbox_module, "write_uid_map", failing)

    def test_hidden_messages_stay_in_the_mbox(self, store: MboxStore, tmp_path: Path) -> None:
        self.add(store, "alice", b"Subject: 1\n\none\n", b"Subject: 2\n\ntwo\n")
        maildrop = self.open(store)
        self.wait(maildrop.commit([list(self.listed(maildrop).uids)[0]]))
        assert self.contents(store) == [b"Subject: 2\n\ntwo\n"]
        assert (tmp_path / "alice").read_bytes().count(b"\nFrom ") + 1 == 2

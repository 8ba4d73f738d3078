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

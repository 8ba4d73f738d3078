"""Big maildrops: a first open of a huge ``new/`` (a Postfix-written or
migrated maildrop) moves at most MOVE_BATCH messages to ``cur/`` and lists
the rest where they are, with the same UIDLs and sizes as once moved;
each message is read once to size it, then never again."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer

from popframe.stores import run_synchronously
from popframe.stores.maildir import MaildirStore, directory, files
from popframe.testing import result_of

pytestmark = pytest.mark.core


def _postfix(root: Path, count: int) -> list[bytes]:
    for sub in ("cur", "new", "tmp"):
        (root / "alice" / sub).mkdir(parents=True, exist_ok=True)
    messages = []
    for n in range(count):
        octets = b"Subject: %d\n\nbody %d\n" % (n, n)
        (root / "alice" / "new" / f"{1700000000 + n}.V801I{n:x}M{n}.mx").write_bytes(octets)
        messages.append(octets)
    return messages


def _session(store: MaildirStore) -> tuple[list[str], list[int], list[bytes]]:
    maildrop = result_of(store.open("alice"))
    try:
        listing = list(maildrop.listing())
        bodies = [result_of(maildrop.open_message(m.uid)).read() for m in listing]
        return [m.uid for m in listing], [m.size for m in listing], bodies
    finally:
        result_of(maildrop.abandon())


def test_a_huge_new_is_moved_a_batch_per_open(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The open moves MOVE_BATCH; the session moves the rest meanwhile."""
    monkeypatch.setattr(directory, "MOVE_BATCH", 4)
    messages = _postfix(tmp_path, 10)
    reads: list[str] = []
    real = files.file_wire_form

    def counted(path: str) -> object:
        reads.append(path)
        return real(path)

    monkeypatch.setattr(directory, "file_wire_form", counted)
    held: list[tuple[Any, tuple[Any, ...], defer.Deferred[Any]]] = []

    def run_blocking(function: Any, *args: Any) -> defer.Deferred[Any]:
        if getattr(function, "__name__", "") == "move_rest":  # held: the test runs it
            d: defer.Deferred[Any] = defer.Deferred()
            held.append((function, args, d))
            return d
        return run_synchronously(function, *args)

    store = MaildirStore(f"{tmp_path}/%u", run_blocking=run_blocking)
    new, cur = tmp_path / "alice" / "new", tmp_path / "alice" / "cur"
    maildrop = result_of(store.open("alice"))
    listing = list(maildrop.listing())
    assert (len(os.listdir(new)), len(os.listdir(cur))) == (6, 4)  # the oldest moved
    assert [result_of(maildrop.open_message(m.uid)).read() for m in listing] == messages
    assert len(reads) == 10  # every message sized once
    # The session's mover: half of it runs, then a RETR, then the rest.
    function, (names, stop, moved), done = held.pop()
    function(names[:3], stop, moved)
    assert (len(os.listdir(new)), len(os.listdir(cur))) == (3, 7)
    assert [result_of(maildrop.open_message(m.uid)).read() for m in listing] == messages
    function(names[3:], stop, moved)
    done.callback(None)
    result_of(maildrop.commit([listing[0].uid, listing[9].uid]))
    assert (len(os.listdir(new)), len(os.listdir(cur))) == (0, 8)
    assert _session(store)[2] == messages[1:9]
    assert len(reads) == 10  # the size cache served the later open
    # A session that ends before its mover started stops it at once.
    _postfix(tmp_path / "more", 6)
    for name in os.listdir(tmp_path / "more" / "alice" / "new"):
        os.rename(tmp_path / "more" / "alice" / "new" / name, new / ("x" + name))
    maildrop = result_of(store.open("alice"))
    assert len(maildrop.listing()) == 14 and len(os.listdir(new)) == 2
    released = maildrop.abandon()
    function, (names, stop, moved), done = held.pop()
    assert stop.is_set() and not released.called
    function(names, stop, moved)
    done.callback(None)
    assert released.called and len(os.listdir(new)) == 2

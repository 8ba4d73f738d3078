"""Big maildrops: a first open of a huge ``new/`` (a Postfix-written or
migrated maildrop) moves at most MOVE_BATCH messages to ``cur/`` and lists
the rest where they are, with the same UIDLs and sizes as once moved;
each message is read once to size it, then never again."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from popframe.stores import run_synchronously
from popframe.stores.maildir import MaildirStore, directory, files
from popframe.testing import result_of


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
    monkeypatch.setattr(directory, "MOVE_BATCH", 4)
    messages = _postfix(tmp_path, 10)
    reads: list[str] = []
    real = files.file_wire_form

    def counted(path: str) -> object:
        reads.append(path)
        return real(path)

    monkeypatch.setattr(directory, "file_wire_form", counted)
    store = MaildirStore(f"{tmp_path}/%u", run_blocking=run_synchronously)
    new, cur = tmp_path / "alice" / "new", tmp_path / "alice" / "cur"
    uids, sizes, bodies = _session(store)
    assert bodies == messages and len(reads) == 10  # every message, sized once
    assert (len(os.listdir(new)), len(os.listdir(cur))) == (6, 4)  # the oldest moved
    assert _session(store) == (uids, sizes, bodies)
    assert (len(os.listdir(new)), len(os.listdir(cur))) == (2, 8)
    assert _session(store) == (uids, sizes, bodies)
    assert (len(os.listdir(new)), len(os.listdir(cur))) == (0, 10)
    assert _session(store) == (uids, sizes, bodies)
    assert len(reads) == 10  # the size cache served every later open
    # A message still in new/ is deleted like any other.
    more = _postfix(tmp_path / "more", 6)
    for name in os.listdir(tmp_path / "more" / "alice" / "new"):
        os.rename(tmp_path / "more" / "alice" / "new" / name, new / ("x" + name))
    maildrop = result_of(store.open("alice"))
    listed = [m.uid for m in maildrop.listing()]
    assert len(listed) == 16 and len(os.listdir(new)) == 2
    result_of(maildrop.commit(listed[-1:]))
    assert len(os.listdir(new)) == 1 and len(_session(store)[0]) == 15
    assert more

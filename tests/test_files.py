"""Atomic file replacement."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from popframe.files import write_file_atomically

pytestmark = pytest.mark.core


def test_write_file_atomically(tmp_path: Path) -> None:
    target = tmp_path / "secret"
    target.write_bytes(b"old")
    target.chmod(0o644)
    old_umask = os.umask(0o077)
    try:
        write_file_atomically(target, b"new", mode=0o640)
    finally:
        os.umask(old_umask)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["secret"]


def test_write_file_atomically_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "is-a-directory"
    target.mkdir()
    (target / "occupied").touch()
    with pytest.raises(OSError):
        write_file_atomically(target, b"data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["is-a-directory"]

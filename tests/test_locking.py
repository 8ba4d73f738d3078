"""Maildrop locks: flock on a file (per open file description, released by
the kernel when the holder dies) and the in-process set of keys."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from zope.interface.verify import verifyObject

from popframe.errors import MaildropInUse, TemporaryFailure
from popframe.interfaces import IMaildropLock, IMaildropLocker
from popframe.stores.locking import FileLocker, MemoryLocker
from popframe.testing import failure_of, result_of

pytestmark = pytest.mark.core

# Takes the lock the way another popframe process would, says so, and holds
# it until killed.
_HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
print("locked", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path / "lock")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "locked\n"
    yield process
    if process.poll() is None:
        process.kill()
    process.wait()


def test_interfaces(tmp_path: Path) -> None:
    verifyObject(IMaildropLocker, FileLocker())
    verifyObject(IMaildropLocker, MemoryLocker())
    verifyObject(IMaildropLock, result_of(FileLocker().acquire(str(tmp_path / "lock"))))
    verifyObject(IMaildropLock, result_of(MemoryLocker().acquire("k")))


def test_second_session_in_the_same_process_is_refused(tmp_path: Path) -> None:
    locker = FileLocker()
    path = str(tmp_path / "lock")
    lock = result_of(locker.acquire(path))
    failure_of(locker.acquire(path), MaildropInUse)
    failure_of(FileLocker().acquire(path), MaildropInUse)  # another locker, same process
    result_of(lock.release())
    result_of(result_of(locker.acquire(path)).release())


def test_release_is_idempotent(tmp_path: Path) -> None:
    locker = FileLocker()
    path = str(tmp_path / "lock")
    lock = result_of(locker.acquire(path))
    assert result_of(lock.release()) is None
    assert result_of(lock.release()) is None
    second = result_of(locker.acquire(path))
    result_of(lock.release())  # must not free the new holder's lock
    failure_of(locker.acquire(path), MaildropInUse)
    result_of(second.release())


def test_the_lock_file_stays(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    result_of(result_of(FileLocker().acquire(str(path))).release())
    assert path.exists()


def test_a_dropped_lock_is_freed_by_garbage_collection(tmp_path: Path) -> None:
    locker = FileLocker()
    path = str(tmp_path / "lock")
    lock = result_of(locker.acquire(path))
    del lock
    gc.collect()
    result_of(result_of(locker.acquire(path)).release())


@pytest.mark.process
def test_held_by_another_process_until_it_is_killed(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    locker = FileLocker()
    path = str(tmp_path / "lock")
    failure_of(locker.acquire(path), MaildropInUse)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    result_of(result_of(locker.acquire(path)).release())


@pytest.mark.process
def test_another_process_cannot_take_our_lock(tmp_path: Path) -> None:
    path = str(tmp_path / "lock")
    lock = result_of(FileLocker().acquire(path))
    try:
        attempt = subprocess.run(
            [sys.executable, "-c", _HOLDER, path], capture_output=True, text=True, input=""
        )
        assert attempt.returncode != 0
        assert "BlockingIOError" in attempt.stderr
    finally:
        result_of(lock.release())


def test_a_symlinked_lock_file_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "victim"
    target.write_text("precious")
    (tmp_path / "lock").symlink_to(target)
    failure_of(FileLocker().acquire(str(tmp_path / "lock")), TemporaryFailure)
    assert target.read_text() == "precious"


def test_a_missing_directory_is_a_temporary_failure(tmp_path: Path) -> None:
    failure_of(FileLocker().acquire(str(tmp_path / "nowhere" / "lock")), TemporaryFailure)


def test_memory_locker() -> None:
    locker = MemoryLocker()
    lock = result_of(locker.acquire("alice"))
    failure_of(locker.acquire("alice"), MaildropInUse)
    other = result_of(locker.acquire("bob"))
    result_of(lock.release())
    again = result_of(locker.acquire("alice"))
    result_of(lock.release())  # idempotent: does not free the new holder
    failure_of(locker.acquire("alice"), MaildropInUse)
    result_of(again.release())
    result_of(other.release())
    assert locker.held == set()

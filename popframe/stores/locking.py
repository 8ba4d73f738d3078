"""Exclusive maildrop locks: ``flock`` on a file for one host, a set of keys
for one process.

``flock`` locks belong to an open file description, not to a process, so
two sessions in one server conflict just as two servers do, and the kernel
drops the lock when the process dies however it dies (no stale lock files
to clean up after a SIGKILL).  They do not span hosts: a cluster needs a
locker of its own behind :class:`~popframe.interfaces.IMaildropLocker`.
"""

from __future__ import annotations

import errno
import fcntl
import os
import weakref

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from popframe.errors import MaildropInUse, TemporaryFailure
from popframe.interfaces import IMaildropLock, IMaildropLocker

__all__ = ["FileLock", "FileLocker", "MemoryLock", "MemoryLocker"]

log = Logger()


@implementer(IMaildropLock)
class FileLock:
    """A held ``flock``.  If it is dropped without ``release()`` (a bug),
    garbage collection still closes the descriptor, so the maildrop is not
    locked until the process exits.
    """

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self._close = weakref.finalize(self, os.close, fd)

    @property
    def held(self) -> bool:
        return self._close.alive

    def release(self) -> defer.Deferred[None]:
        # Closing the last descriptor of the open file description releases
        # the flock; the lock file itself stays, because unlinking it would
        # let two sessions lock two different inodes of the same name.
        self._close()
        return defer.succeed(None)


@implementer(IMaildropLocker)
class FileLocker:
    """Locks keyed by the path of a lock file, created if missing."""

    def acquire(self, key: str) -> defer.Deferred[IMaildropLock]:
        try:
            return defer.succeed(self.acquire_now(key))
        except (MaildropInUse, TemporaryFailure):
            return defer.fail()

    def acquire_now(self, path: str) -> FileLock:
        """Take the lock without waiting, or raise ``MaildropInUse``."""
        # flock needs no write access: O_RDONLY keeps a read-only maildir
        # (or one on a read-only mount) lockable once the file exists.
        flags = os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            fd = os.open(path, flags, 0o600)
        except OSError as e:
            log.error("cannot open lock file {path}: {error}", path=path, error=e)
            raise TemporaryFailure() from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise MaildropInUse() from None
            log.error("cannot lock {path}: {error}", path=path, error=e)
            raise TemporaryFailure() from e
        return FileLock(path, fd)


@implementer(IMaildropLock)
class MemoryLock:
    def __init__(self, held: set[str], key: str) -> None:
        self._held = held
        self.key = key

    def release(self) -> defer.Deferred[None]:
        self._held.discard(self.key)
        self._held = set()  # a second release must not free a later holder
        return defer.succeed(None)


@implementer(IMaildropLocker)
class MemoryLocker:
    """Locks that live in one process: for the memory store and for tests."""

    def __init__(self) -> None:
        self.held: set[str] = set()

    def acquire(self, key: str) -> defer.Deferred[IMaildropLock]:
        if key in self.held:
            return defer.fail(MaildropInUse())
        self.held.add(key)
        return defer.succeed(MemoryLock(self.held, key))

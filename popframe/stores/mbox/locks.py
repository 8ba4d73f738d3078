"""The mbox locks Postfix, procmail and mutt honour together, taken as mutt
takes them: a kernel ``fcntl`` lock on the mbox, then the ``NAME.lock``
dotlock beside it.  Held briefly (a snapshot, an append, a rewrite), never
for a POP3 session's length, so Postfix can append during a long one.

- The kernel lock is an open-file-description lock (``F_OFD_SETLK``,
  Linux) where there is one: it conflicts with the classic ``fcntl``
  locks Postfix and mutt take, but belongs to our descriptor, not the
  process, so a RETR closing another descriptor of the same file does not
  drop it.  Elsewhere, classic ``lockf``.
- The dotlock is linked in already holding who made it (``popframe PID
  HOST``), or where that cannot be done made with ``O_CREAT|O_EXCL``.
  One older than ``stale`` seconds is broken, as Postfix breaks one after
  ``stale_lock_time`` (500 s); one popframe made in a process that is
  gone (SIGKILL) is broken at once.
- Both or neither: popframe never waits for one lock while it holds the
  other.  Postfix's local(8) holds its dotlock while it retries the
  kernel lock (``deliver_lock_attempts`` times ``deliver_lock_delay``:
  20 s), so holding the kernel lock while waiting for that dotlock kept
  both waiting until Postfix gave up and deferred the mail ("unable to
  lock for exclusive access", seen in CI).  So when the dotlock is held,
  the kernel lock is let go before the next try.  Waits are bounded
  (``timeout``), and a timeout is a temporary failure.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
import time
from typing import Any

from twisted.logger import Logger

__all__ = ["LockTimeout", "MboxLocks", "dotlock_path"]

log = Logger(namespace="popframe.stores.mbox")

_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", None)
#: struct flock on Linux (l_type, l_whence, l_start, l_len, l_pid, padding).
_FLOCK = "hhqqi4x"
_FIRST_PAUSE = 0.005
_MAX_PAUSE = 0.2


class LockTimeout(OSError):
    """A lock stayed held for longer than the bound."""


def dotlock_path(path: str) -> str:
    return path + ".lock"


def _owner_text() -> bytes:
    return f"popframe {os.getpid()} {socket.gethostname()}\n".encode()


class MboxLocks:
    """``with MboxLocks(fd, path): ...``: the kernel lock on ``fd`` (the
    mbox, opened for writing when ``exclusive``), then the dotlock for
    ``path``; released in the other order.  Raises :class:`LockTimeout`."""

    def __init__(self, fd: int, path: str, *, exclusive: bool = True, timeout: float = 30.0,
                 stale: float = 500.0) -> None:
        self.fd = fd
        self.path = path
        self.exclusive = exclusive
        self.timeout = timeout
        self.stale = stale
        self._dotlock: str | None = None
        self._missing = ""  # the lock a timeout names: the one last found held

    def __enter__(self) -> MboxLocks:
        if not _wait(self._take_both, time.monotonic() + self.timeout):
            raise LockTimeout(errno.EAGAIN, "lock held too long", self._missing)
        return self

    def _take_both(self) -> bool:
        """The kernel lock, then the dotlock; if the dotlock is held, the
        kernel lock is released again (both or neither: see the module)."""
        self._missing = f"{self.path} (fcntl)"
        if not self._kernel_lock(True):
            return False
        self._missing = dotlock_path(self.path)
        taken = False
        try:
            taken = self._take_dotlock()
        finally:
            if not taken:
                self._kernel_lock(False)
        return taken

    def __exit__(self, *exc: Any) -> None:
        try:
            if self._dotlock is not None:
                try:
                    os.unlink(self._dotlock)
                except FileNotFoundError:
                    log.warn("dotlock {path} was removed under us", path=self._dotlock)
                self._dotlock = None
        finally:
            self._kernel_lock(False)

    # -- the kernel lock ------------------------------------------------------------

    def _kernel_lock(self, take: bool) -> bool:
        """Take (without waiting) or release the lock; False while another
        holds it."""
        if _OFD_SETLK is not None:
            kind = (fcntl.F_WRLCK if self.exclusive else fcntl.F_RDLCK) if take else fcntl.F_UNLCK
            request = struct.pack(_FLOCK, kind, os.SEEK_SET, 0, 0, 0)
            try:
                fcntl.fcntl(self.fd, _OFD_SETLK, request)
            except OSError as e:
                if take and e.errno in (errno.EAGAIN, errno.EACCES):
                    return False
                raise
            return True
        how = (fcntl.LOCK_EX if self.exclusive else fcntl.LOCK_SH) if take else fcntl.LOCK_UN
        try:
            fcntl.lockf(self.fd, how | (fcntl.LOCK_NB if take else 0))
        except OSError as e:
            if take and e.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise
        return True

    # -- the dotlock ----------------------------------------------------------------

    def _take_dotlock(self) -> bool:
        lock = dotlock_path(self.path)
        try:
            _create_holding(lock, _owner_text())
        except FileExistsError:
            self._break_if_stale(lock)
            return False
        self._dotlock = lock
        return True

    def _break_if_stale(self, lock: str) -> None:
        """Remove a dotlock older than ``stale`` seconds, or one a popframe
        process on this host made and died holding.  The file is checked
        again just before the unlink (same inode), which narrows, but like
        every dotlock breaker cannot close, the race with a new holder."""
        try:
            st = os.lstat(lock)
            owner = _dead_popframe_owner(lock)
        except FileNotFoundError:
            return
        age = time.time() - st.st_mtime
        if age < self.stale and not owner:
            return
        try:
            again = os.lstat(lock)
            if (again.st_ino, again.st_mtime_ns) != (st.st_ino, st.st_mtime_ns):
                return
            os.unlink(lock)
        except FileNotFoundError:
            return
        why = f"its process {owner} is gone" if owner else f"{age:.0f}s old"
        log.warn("broke the stale dotlock {path} ({why})", path=lock, why=why)


def _create_holding(path: str, content: bytes) -> None:
    """Make ``path`` holding ``content`` from its first instant, or raise
    FileExistsError, so a process killed meanwhile leaves no dotlock
    without its owner (one that would stand ``stale`` seconds: a killed
    ``popframe migrate`` left such a lock).  Where the file system has no
    unnamed files (or there is no ``/proc``), made with ``O_EXCL`` and
    then written."""
    if _link_unnamed(path, content):
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, content)
    finally:
        os.close(fd)


def _link_unnamed(path: str, content: bytes) -> bool:
    """``content`` written to an unnamed file (``O_TMPFILE``) in ``path``'s
    directory, then linked in as ``path`` (FileExistsError when it is
    there, a symlink too); False where that cannot be done here."""
    unnamed = getattr(os, "O_TMPFILE", None)
    if unnamed is None:
        return False
    directory = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            fd = os.open(".", unnamed | os.O_WRONLY | os.O_CLOEXEC, 0o644, dir_fd=directory)
        except OSError:  # no O_TMPFILE on this file system (EOPNOTSUPP, EISDIR, ...)
            return False
        try:
            os.write(fd, content)
            # A dir_fd makes os.link use linkat(..., AT_SYMLINK_FOLLOW).
            os.link(f"/proc/self/fd/{fd}", os.path.basename(path), src_dir_fd=directory,
                    dst_dir_fd=directory, follow_symlinks=True)
        except FileExistsError:
            raise
        except OSError:  # no /proc
            return False
        finally:
            os.close(fd)
        return True
    finally:
        os.close(directory)


def _dead_popframe_owner(lock: str) -> int | None:
    """The pid in a dotlock popframe wrote on this host, if that process
    no longer exists."""
    try:
        with open(lock, "rb") as f:
            text = f.read(256).decode("ascii", "replace").split()
    except OSError:
        return None
    if len(text) != 3 or text[0] != "popframe" or not text[1].isdigit():
        return None
    if text[2] != socket.gethostname():
        return None
    pid = int(text[1])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return pid
    except PermissionError:
        return None
    return None


def _wait(attempt: Any, deadline: float) -> bool:
    """Call ``attempt()`` until it returns True, pausing a little longer
    each time; False if it has not by ``deadline``."""
    pause = _FIRST_PAUSE
    while not attempt():
        now = time.monotonic()
        if now >= deadline:
            return False
        time.sleep(min(pause, max(0.0, deadline - now)))
        pause = min(pause * 2, _MAX_PAUSE)
    return True

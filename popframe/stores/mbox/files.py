"""The files of one mbox: the mbox itself, opened without following a
symlink or blocking on a FIFO, and popframe's own files beside it, all
hidden (``.NAME.popframe-*``) so mail tools listing ``/var/mail`` pass
them by, and never mistaken for a user's mbox (a user name cannot start
with a dot).
"""

from __future__ import annotations

import errno
import os
import stat

__all__ = ["open_mbox", "side_path"]

#: popframe's files beside an mbox, by job.
LOCK = "lock"  # the POP3 session lock (flock), never removed
INDEX = "index"  # offsets, sizes and uids of the messages: a cache
JOURNAL = "journal"  # the append in progress, if any
REWRITE = "rewrite"  # the new file a commit is writing
HIDDEN = "hidden"  # dele=hide: the uids DELE hid (popframe.stores.uidstate)
RETRIEVED = "retrieved"  # EXPIRE: when each uid was retrieved


def side_path(path: str, job: str) -> str:
    directory, name = os.path.split(path)
    return os.path.join(directory, f".{name}.popframe-{job}")


def open_mbox(path: str, write: bool = False, create: bool = False) -> int | None:
    """A descriptor of the mbox (a regular file, not a symlink); None if
    it does not exist and ``create`` is off."""
    flags = (os.O_RDWR if write else os.O_RDONLY) | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    if create:
        flags |= os.O_CREAT
    try:
        fd = os.open(path, flags, 0o600)
    except FileNotFoundError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        os.set_blocking(fd, True)
        return fd
    except BaseException:
        os.close(fd)
        raise

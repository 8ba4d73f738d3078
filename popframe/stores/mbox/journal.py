"""The append journal: an append to an mbox is not atomic, so before the
first octet goes in, ``.NAME.popframe-journal`` durably says where the
new message starts and how long it will be.  If the appending process is
killed, the next popframe process to take the mbox locks (a POP3 login, a
delivery, a commit) cuts the partial message off before anyone reads it.

The file stays (one record, rewritten in place: a sync to arm it, none to
disarm it), and a record is believed only while it matches the mbox:
same inode, and a file that ends inside the announced message.  A
message whose every octet is in is kept even if disarming did not reach
the disk.  The killed process's dotlock keeps other writers off the mbox
until popframe breaks it (it says whose it is) or it is older than their
stale bound (Postfix: 500 s), which is what makes cutting at the
announced offset safe.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass

from twisted.logger import Logger

from popframe.files import fsync_directory
from popframe.stores.mbox.files import JOURNAL, side_path

__all__ = ["AppendJournal", "PendingAppend"]

log = Logger(namespace="popframe.stores.mbox")

_RECORD_SIZE = 128
_IDLE = b"idle".ljust(_RECORD_SIZE - 1) + b"\n"


@dataclass(frozen=True, slots=True)
class PendingAppend:
    device: int
    inode: int
    offset: int
    length: int


def _record(pending: PendingAppend) -> bytes:
    body = b"append %d %d %d %d" % (pending.device, pending.inode, pending.offset, pending.length)
    return (body + b" %08x" % zlib.crc32(body)).ljust(_RECORD_SIZE - 1) + b"\n"


def _parse(data: bytes) -> PendingAppend | None:
    words = data.split()
    if len(words) != 6 or words[0] != b"append":
        return None
    body = b" ".join(words[:5])
    try:
        if int(words[5], 16) != zlib.crc32(body):
            return None
        return PendingAppend(*(int(w) for w in words[1:5]))
    except ValueError:
        return None


class AppendJournal:
    """The journal of the mbox at ``mbox_path``."""

    def __init__(self, mbox_path: str) -> None:
        self.path = side_path(mbox_path, JOURNAL)

    def arm(self, pending: PendingAppend) -> None:
        """Durably announce an append (before its first octet)."""
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags)
            created = False
        except FileNotFoundError:
            fd = os.open(self.path, flags | os.O_CREAT, 0o600)
            created = True
        try:
            os.pwrite(fd, _record(pending), 0)
            os.fdatasync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_directory(os.path.dirname(self.path) or ".")

    def disarm(self) -> None:
        """The append is complete (or undone): no sync needed (see above)."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            os.pwrite(fd, _IDLE, 0)
        finally:
            os.close(fd)

    def pending(self) -> PendingAppend | None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            return _parse(os.pread(fd, _RECORD_SIZE, 0))
        finally:
            os.close(fd)

    def recover(self, fd: int) -> None:
        """Under the mbox locks, with ``fd`` the mbox opened for writing:
        cut off an append a killed process left unfinished."""
        pending = self.pending()
        if pending is None:
            return
        st = os.fstat(fd)
        end = pending.offset + pending.length
        same_file = (st.st_dev, st.st_ino) == (pending.device, pending.inode)
        if not same_file or st.st_size <= pending.offset:
            self.disarm()  # another file now, or nothing was written
            return
        if st.st_size >= end:
            if st.st_size > end and os.pread(fd, 5, end) != b"From ":
                log.error("{path}: an unfinished append was followed by another writer's; "
                          "left as it is", path=self.path)
            self.disarm()  # complete: keep it
            return
        os.ftruncate(fd, pending.offset)
        os.fsync(fd)
        self.disarm()
        log.warn("{path}: removed the unfinished append at offset {offset} ({octets} of "
                 "{length} octets) a killed delivery left", path=self.path,
                 offset=pending.offset, octets=st.st_size - pending.offset, length=pending.length)

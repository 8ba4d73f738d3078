"""One mbox on disk, and the blocking work on it, each step under the mbox
locks (:mod:`.locks`) and only for as long as the step takes: take a
snapshot for a session, append a delivered message, rewrite the file
without a session's deleted messages.  Every step first finishes what a
killed process left (:mod:`.journal`).

A rewrite never changes the file in place: the kept messages (and
anything appended since the snapshot) go into ``.NAME.popframe-rewrite``,
which is flushed and renamed over the mbox only when complete, so a crash
at any point leaves the old file or the new one, never half of either.
Writers that take the dotlock before opening the mbox (Postfix, procmail)
always write to the current file; the owner and mode of the old file are
kept where the process may set them.
"""

from __future__ import annotations

import errno
import os
import re
import zlib
from collections.abc import Collection
from dataclasses import dataclass
from typing import BinaryIO

from twisted.logger import Logger

from popframe.files import fsync_directory
from popframe.interfaces import MessageList
from popframe.stores.mbox.files import HIDDEN, REWRITE, open_mbox, side_path
from popframe.stores.mbox.format import Quoter, from_line
from popframe.stores.mbox.index import Index, current_index, file_key, remember, write_index
from popframe.stores.mbox.journal import AppendJournal, PendingAppend
from popframe.stores.mbox.locks import MboxLocks
from popframe.stores.mbox.reader import MessageReader
from popframe.stores.mbox.scan import Entry, header_value
from popframe.stores.uidstate import read_uid_map, write_uid_map

__all__ = ["Mbox", "MboxChanged", "Snapshot"]

log = Logger(namespace="popframe.stores.mbox")

_CHUNK = 1 << 16
_REOPEN_ATTEMPTS = 5
_HEADERS_MAX = 1 << 16


class MboxChanged(OSError):
    """The mbox is not the file the snapshot was taken of (another program
    rewrote it), or the message is no longer where it was."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A session's view: the messages at open, and which file they are in."""

    identity: tuple[int, int] | None  # device and inode; None: no mbox
    entries: tuple[Entry, ...]
    listing: MessageList

    @classmethod
    def of(cls, index: Index | None, hidden: Collection[str] = ()) -> Snapshot:
        """The snapshot of ``index`` less the ``hidden`` uids (dele=hide)."""
        if index is None:
            return cls(None, (), MessageList([], [], b""))
        if not hidden or hidden.isdisjoint(index.uids):  # type: ignore[attr-defined]
            return cls(index.key[:2], index.entries, index.listing())
        kept = [i for i, uid in enumerate(index.uids) if uid not in hidden]
        entries = tuple(index.entries[i] for i in kept)
        return cls(index.key[:2], entries, MessageList(
            [index.uids[i] for i in kept], [e.size for e in entries],
            bytes(e.ready for e in entries)))

    def position(self, uid: str) -> int | None:
        try:
            return list(self.listing.uids).index(uid)
        except ValueError:
            return None


class Mbox:
    """The mbox at ``path``; ``lock_timeout`` and ``stale_lock`` as for
    :class:`~popframe.stores.mbox.locks.MboxLocks`."""

    def __init__(self, path: str, lock_timeout: float = 30.0, stale_lock: float = 500.0,
                 hide: bool = False) -> None:
        self.path = path
        self.lock_timeout = lock_timeout
        self.stale_lock = stale_lock
        self.journal = AppendJournal(path)
        # dele=hide: deletions are uids added to .NAME.popframe-hidden,
        # which snapshots leave out; the mbox itself is not rewritten.
        self.hide = hide

    def _locked(self, create: bool = False) -> tuple[int, MboxLocks] | None:
        """The mbox open for writing and locked (checked to still be the
        file at ``path`` once locked: a rewrite may have replaced it while
        we waited), or None if there is none."""
        for _ in range(_REOPEN_ATTEMPTS):
            fd = open_mbox(self.path, write=True, create=create)
            if fd is None:
                return None
            locks = MboxLocks(fd, self.path, timeout=self.lock_timeout, stale=self.stale_lock)
            try:
                locks.__enter__()
            except BaseException:
                os.close(fd)
                raise
            if _still_there(fd, self.path):
                return fd, locks
            _release(fd, locks)
        raise MboxChanged(errno.ESTALE, "the mbox keeps being replaced", self.path)

    # -- a session's snapshot -----------------------------------------------------------

    def snapshot(self) -> Snapshot:
        locked = self._locked()
        if locked is None:
            return Snapshot.of(None)
        fd, locks = locked
        try:
            self.journal.recover(fd)
            _remove_quietly(side_path(self.path, REWRITE))  # a commit's, if one was killed
            hidden = read_uid_map(side_path(self.path, HIDDEN)) if self.hide else {}
            return Snapshot.of(current_index(fd, self.path), hidden.keys())
        finally:
            _release(fd, locks)

    def open_message(self, snapshot: Snapshot, position: int) -> MessageReader:
        """A reader of a listed message, after checking that it is still
        where the snapshot says.  Quick enough for the reactor thread: an
        open, an fstat and one small read."""
        entry = snapshot.entries[position]
        fd = open_mbox(self.path)
        if fd is None:
            raise MboxChanged(errno.ENOENT, "the mbox is gone", self.path)
        try:
            st = os.fstat(fd)
            line = os.pread(fd, entry.content - entry.start, entry.start)
            if (st.st_dev, st.st_ino) != snapshot.identity or zlib.crc32(line) != entry.from_crc:
                raise MboxChanged(errno.ESTALE, "the message moved", self.path)
        except BaseException:
            os.close(fd)
            raise
        return MessageReader(fd, entry.content, entry.content_end)

    # -- delivery ----------------------------------------------------------------------

    def append(self, message: BinaryIO) -> None:
        """Append ``message`` (read to its end, twice: once to measure
        the quoted octets for the journal) as one mboxrd message."""
        length, ending = _quoted_length(message)
        envelope = from_line(_return_path(message), final_newline=ending == b"\n")
        locked = self._locked(create=True)
        assert locked is not None
        fd, locks = locked
        try:
            self.journal.recover(fd)
            st = os.fstat(fd)
            offset = st.st_size
            head = _padding(os.pread(fd, 2, max(0, offset - 2)), offset) + envelope
            total = len(head) + length + len(ending)
            self.journal.arm(PendingAppend(st.st_dev, st.st_ino, offset, total))
            try:
                written = self._write_message(fd, offset, head, message, ending)
                if written != total:
                    raise OSError(errno.EIO, f"wrote {written} octets, not {total}", self.path)
                os.fsync(fd)
            except BaseException:
                os.ftruncate(fd, offset)  # not half-stored
                os.fsync(fd)
                self.journal.disarm()
                raise
            self.journal.disarm()
        finally:
            _release(fd, locks)

    def _write_message(self, fd: int, offset: int, head: bytes, message: BinaryIO,
                       ending: bytes) -> int:
        message.seek(0)
        quoter = Quoter()
        position = offset
        position += _write_at(fd, head, position)
        for chunk in iter(lambda: message.read(_CHUNK), b""):
            position += _write_at(fd, quoter.feed(chunk), position)
        position += _write_at(fd, quoter.finish() + ending, position)
        return position - offset

    # -- commit --------------------------------------------------------------------------

    def delete(self, uids: list[str]) -> int:
        """Remove the messages with these uids, all or none (a crash leaves
        the old file); return how many were found.  Messages are found by
        uid in the file as it is now, so mail appended since the snapshot
        stays and nothing else goes."""
        locked = self._locked()
        if locked is None:
            return 0
        fd, locks = locked
        try:
            self.journal.recover(fd)
            index = current_index(fd, self.path)
            wanted = set(uids)
            doomed = {i for i, uid in enumerate(index.uids) if uid in wanted}
            if doomed and self.hide:
                self._hide(index, doomed)
            elif doomed:
                self._rewrite(fd, index, doomed)
            return len(doomed)
        finally:
            _release(fd, locks)

    def _hide(self, index: Index, doomed: set[int]) -> None:
        """dele=hide: add the uids to the hidden map in one durable write
        (all or none), forgetting those no longer in the mbox."""
        path = side_path(self.path, HIDDEN)
        present = set(index.uids)
        hidden = {uid: 1.0 for uid in read_uid_map(path) if uid in present}
        hidden.update((index.uids[i], 1.0) for i in doomed)
        write_uid_map(path, hidden)

    def _rewrite(self, fd: int, index: Index, doomed: set[int]) -> None:
        st = os.fstat(fd)
        new_path = side_path(self.path, REWRITE)
        _remove_quietly(new_path)
        new = os.open(new_path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                      0o600)
        try:
            _keep_owner(new, st, self.path)
            kept: list[Entry] = []
            uids: list[str] = []
            first = index.entries[0].start if index.entries else st.st_size
            position = _copy(fd, new, 0, first, 0)  # octets before the first message
            for i, entry in enumerate(index.entries):
                if i in doomed:
                    continue
                shift = position - entry.start
                position = _copy(fd, new, entry.start, entry.end, position)
                kept.append(_shifted(entry, shift))
                uids.append(index.uids[i])
            last = index.entries[-1].end if index.entries else first
            position = _copy(fd, new, last, st.st_size, position)  # (nothing, under the locks)
            os.fsync(new)
            os.rename(new_path, self.path)
            new_key = file_key(os.fstat(new))
        except BaseException:
            os.close(new)
            _remove_quietly(new_path)
            raise
        os.close(new)
        fsync_directory(os.path.dirname(self.path) or ".")
        gone = [index.uids[i] for i in sorted(doomed)]
        rewritten = Index(new_key, tuple(kept), tuple(uids), index.retiring(gone))
        write_index(self.path, rewritten)
        remember(self.path, rewritten)


def _still_there(fd: int, path: str) -> bool:
    try:
        there = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    here = os.fstat(fd)
    return (there.st_dev, there.st_ino) == (here.st_dev, here.st_ino) and here.st_nlink > 0


def _release(fd: int, locks: MboxLocks) -> None:
    try:
        locks.__exit__(None, None, None)
    finally:
        os.close(fd)


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _padding(tail: bytes, size: int) -> bytes:
    """What puts an empty line before a message appended to a file of
    ``size`` octets ending in ``tail`` (a writer may have left none)."""
    if size == 0 or tail.endswith(b"\n\n") or (size == 1 and tail == b"\n"):
        return b""
    return b"\n" if tail.endswith(b"\n") else b"\n\n"


def _return_path(message: BinaryIO) -> str | None:
    """The sender for the ``From`` line: the message's Return-Path."""
    message.seek(0)
    head = message.read(_HEADERS_MAX)
    end = re.search(rb"\n\r?\n", head)
    value = header_value(head if end is None else head[: end.start() + 1], b"Return-Path")
    message.seek(0)
    return value


def _quoted_length(message: BinaryIO) -> tuple[int, bytes]:
    """The octets ``message`` takes quoted, and the ending it needs (a
    final LF if it lacks one, then the empty line)."""
    message.seek(0)
    quoter = Quoter()
    length = 0
    last = b""
    for chunk in iter(lambda: message.read(_CHUNK), b""):
        length += len(quoter.feed(chunk))
        last = chunk[-1:]
    length += len(quoter.finish())
    return length, (b"\n" if last in (b"\n", b"") else b"\n\n")


def _write_at(fd: int, data: bytes, offset: int) -> int:
    view = memoryview(data)
    while view:
        offset += (n := os.pwrite(fd, view, offset))
        view = view[n:]
    return len(data)


def _copy(source: int, target: int, start: int, end: int, position: int) -> int:
    """Copy ``source[start:end]`` to ``target`` at ``position``; the new
    position."""
    while start < end:
        try:
            n = os.copy_file_range(source, target, end - start, start, position)
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            data = os.pread(source, min(_CHUNK * 16, end - start), start)
            n = _write_at(target, data, position) if data else 0
        if n == 0:
            raise OSError(errno.EIO, "the mbox ended early", "")
        start += n
        position += n
    return position


def _shifted(entry: Entry, shift: int) -> Entry:
    return Entry(entry.start + shift, entry.content + shift, entry.content_end + shift,
                 entry.end + shift, entry.size, entry.ready, entry.from_crc, entry.x_uidl,
                 entry.digest)


def _keep_owner(fd: int, st: os.stat_result, path: str) -> None:
    """Give the new file the old one's mode, owner and group, as far as
    this process may."""
    os.fchmod(fd, st.st_mode & 0o7777)
    try:
        os.fchown(fd, st.st_uid, st.st_gid)
    except PermissionError:
        if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
            log.warn("{path}: the rewritten mbox cannot keep its owner {uid}:{gid} "
                     "(run as root or as the owner)", path=path, uid=st.st_uid, gid=st.st_gid)

"""Connection and session counts behind ``--max-connections`` and
``--max-sessions-per-user``.

``--max-connections`` is a limit for the whole server, also with
``--workers N``: each worker publishes its own count in one slot of a
small shared memory segment the parent made (:class:`SharedConnectionCount`),
and admits a connection while the slots add up to less than the limit.  A
worker writes only its own slot, so no lock is needed; two workers
admitting at the same instant can overshoot the limit by at most one
connection each, which a limit meant to protect the machine tolerates.
"""

from __future__ import annotations

import mmap
import os
import struct

__all__ = ["ConnectionCount", "SharedConnectionCount", "UserSessions", "count_key",
           "shared_count_segment", "uncount_key"]

_SLOT = struct.Struct("=q")


class ConnectionCount:
    """Open connections in this process."""

    def __init__(self) -> None:
        self.count = 0

    def acquire(self, limit: int) -> bool:
        """Count one more connection, unless ``limit`` are open (False)."""
        if self.count >= limit:
            return False
        self.count += 1
        return True

    def release(self) -> None:
        self.count -= 1

    def total(self) -> int:
        return self.count


def shared_count_segment(slots: int) -> int:
    """A new shared memory segment of ``slots`` zeroed counters: a file
    descriptor the parent passes to its workers."""
    fd = os.memfd_create("popframe-connections", 0)
    os.ftruncate(fd, max(1, slots) * _SLOT.size)
    return fd


class SharedConnectionCount(ConnectionCount):
    """This worker's slot ``slot`` in the segment on ``fd`` (see the module
    docstring).  The slot is zeroed at start: a restarted worker takes
    over the slot of one whose connections died with it."""

    def __init__(self, fd: int, slot: int, slots: int) -> None:
        super().__init__()
        self._map = mmap.mmap(fd, slots * _SLOT.size)
        self._offset = slot * _SLOT.size
        self._slots = slots
        self._format = struct.Struct(f"={slots}q")
        self._publish()

    def _publish(self) -> None:
        _SLOT.pack_into(self._map, self._offset, self.count)

    def total(self) -> int:
        return sum(self._format.unpack_from(self._map, 0))

    def acquire(self, limit: int) -> bool:
        if self.total() >= limit:
            return False
        self.count += 1
        self._publish()
        return True

    def release(self) -> None:
        self.count -= 1
        self._publish()


def count_key(counts: dict[str, int], key: str, limit: int) -> bool:
    """Count one more for ``key`` in ``counts``; False (and not counted)
    when it already has ``limit``."""
    count = counts.get(key, 0)
    if count >= limit:
        return False
    counts[key] = count + 1
    return True


def uncount_key(counts: dict[str, int], key: str) -> None:
    """One fewer for ``key``; a key at zero leaves ``counts``."""
    count = counts.get(key, 0) - 1
    if count > 0:
        counts[key] = count
    else:
        counts.pop(key, None)


class UserSessions:
    """Sessions per user in this process (``--max-sessions-per-user``)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def acquire(self, user: str, limit: int) -> bool:
        return count_key(self.counts, user, limit)

    def release(self, user: str) -> None:
        uncount_key(self.counts, user)

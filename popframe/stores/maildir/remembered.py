"""Listings of recently opened maildirs, kept in memory by path, so the
next session in this process reuses one instead of reading
``popframe.listing`` (see
:meth:`~popframe.stores.maildir.directory.Maildir.load`)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from popframe.stores.maildir.listing import Snapshot

#: Messages the remembered listings may hold in all (a few hundred bytes
#: each): thousands of ordinary maildrops, or one of 100,000.
REMEMBERED_MESSAGES = 100_000


@dataclass(frozen=True, slots=True)
class Known:
    """A listing and what makes it still right: the ``cur/`` names it was
    made from (in readdir order), and the key (device, inode and ctime) of
    ``cur/`` and ``new/`` if they had settled when a readdir vouched for it.
    """

    snapshot: Snapshot
    names: list[str] | None  # None: the snapshot's entries (all in cur/)
    key: tuple[int, ...] | None

    def cur_names(self) -> list[str]:
        return self.snapshot.entries() if self.names is None else self.names


class RememberedListings:
    """Listings by maildir path, the least recently used out first once
    they hold more than ``messages`` messages in all; the newest always
    stays.  Bounded by messages, not maildirs: a count of 64 maildirs made
    a server polled by a few hundred users list every maildrop again in a
    thread at every login.  Read on the reactor thread and written by
    loads in threads, hence the lock.
    """

    def __init__(self, messages: int = REMEMBERED_MESSAGES) -> None:
        self._known: OrderedDict[str, Known] = OrderedDict()
        self._limit = messages
        self._messages = 0
        self._lock = threading.Lock()

    def recall(self, path: str) -> Known | None:
        with self._lock:
            known = self._known.get(path)
            if known is not None:
                self._known.move_to_end(path)
            return known

    def remember(self, path: str, known: Known) -> None:
        with self._lock:
            self._drop(path)
            self._known[path] = known
            self._messages += len(known.snapshot.listing)
            while self._messages > self._limit and len(self._known) > 1:
                self._drop(next(iter(self._known)))

    def forget(self, path: str) -> None:
        with self._lock:
            self._drop(path)

    def clear(self) -> None:
        with self._lock:
            self._known.clear()
            self._messages = 0

    def __getitem__(self, path: str) -> Known:
        return self._known[path]

    def __len__(self) -> int:
        return len(self._known)

    def _drop(self, path: str) -> None:
        known = self._known.pop(path, None)
        if known is not None:
            self._messages -= len(known.snapshot.listing)


#: The process's remembered listings, shared by every Maildir store in it.
LISTINGS = RememberedListings()

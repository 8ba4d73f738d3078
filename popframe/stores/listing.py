"""Maildir listings as the store keeps them: the :class:`Snapshot` of an
open maildrop, ``MessageInfo`` objects made in bulk, and the format of
``popframe.listing``, the persisted listing that lets the next session, in
any process, skip making it (see :mod:`popframe.stores.maildir` for when a
listing is trusted).

The file: ``"popframe-listing 1 CRC32 COUNT KEY\n"``, then four sections
separated by NUL, one entry per message in listing order: the ``cur/``
names joined by LF, the uids joined by LF, the sizes joined by ``,``, and
one ``1`` or ``0`` per message for wire-ready.  KEY is the settled
directories' key a readdir vouched for (its numbers joined by ``,``), or
``-``.  The CRC-32 (8 hex digits) covers everything after it.  Parsed by a
few C-level splits and checked section by section.
"""

from __future__ import annotations

import gc
import json
import os
import threading
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from itertools import repeat
from operator import attrgetter

from popframe.interfaces import MessageInfo

#: RFC 1939: a UIDL value is 1 to 70 characters.
UID_MAX = 70
_LISTING_PREFIX = b"popframe-listing 1 "


def relative_path(entry: str) -> str:
    """The path in the maildir of a :class:`Snapshot` entry: a bare name
    lives in ``cur/``; mail that could not move keeps ``new/NAME``.  (Bare
    names let a listing share the strings readdir made.)
    """
    return entry if "/" in entry else "cur/" + entry


#: MessageInfo's fields in order, and setters for its slots (None if it
#: is not the frozen slotted dataclass :func:`message_infos` expects).
_INFO_FIELDS = ("uid", "size", "wire_ready")
_INFO_SETTERS = (
    tuple(getattr(MessageInfo, name).__set__ for name in _INFO_FIELDS)
    if tuple(f.name for f in fields(MessageInfo)) == _INFO_FIELDS
    and getattr(MessageInfo, "__slots__", None) == _INFO_FIELDS
    and not hasattr(MessageInfo, "__post_init__")
    else None
)


def message_infos(uids: list[str], sizes: list[int], ready: Iterable[bool]) -> list[MessageInfo]:
    """``MessageInfo``s from parallel sequences, the way a listing is loaded.

    The frozen dataclass's ``__init__`` is a Python call per object (its
    ``object.__setattr__`` calls are half the time of loading 100,000), so
    the objects are made by C-level maps: allocate, then fill each slot.
    Equal to constructed ones in every way (tests check).
    """
    if _INFO_SETTERS is None:
        return list(map(MessageInfo, uids, sizes, ready))
    infos: list[MessageInfo] = list(map(object.__new__, repeat(MessageInfo, len(uids))))
    for setter, values in zip(_INFO_SETTERS, (uids, sizes, ready)):
        deque(map(setter, infos, values), maxlen=0)
    return infos


class Snapshot:
    """A maildrop as listed at open: the listing, and each message's entry
    (see :func:`relative_path`) in the same order.  Sessions that reuse a
    listing share it, so nothing changes it once made.

    The entries of a loaded listing may stay undecoded, and the map from
    uid to entry is made at first need: a client that only polls (STAT,
    UIDL, QUIT) never needs either, and for 100,000 messages they are a
    third of loading one.
    """

    __slots__ = ("listing", "_entries", "_where")

    def __init__(
        self,
        listing: list[MessageInfo],
        entries: list[str] | bytes,
        where: dict[str, str] | None = None,
    ) -> None:
        self.listing = listing
        self._entries = entries  # bytes: the names joined by LF, all in cur/
        self._where = where

    def entries(self) -> list[str]:
        if isinstance(self._entries, bytes):
            self._entries = os.fsdecode(self._entries).split("\n") if self.listing else []
        return self._entries

    @property
    def mapped(self) -> bool:
        """Whether :meth:`where` is made (and so costs nothing)."""
        return self._where is not None

    def where(self) -> dict[str, str]:
        """uid -> entry."""
        if self._where is None:
            self._where = dict(zip(map(attrgetter("uid"), self.listing), self.entries()))
        return self._where


def same_names(names: list[str], known: list[str]) -> bool:
    """Whether two lists of ``cur/`` names hold the same names; ``names``
    comes from readdir (no name twice).  An unchanged directory reads in
    the same order, and comparing lists is 20 times faster than sets.
    """
    return names == known or (len(names) == len(known) and frozenset(names) == frozenset(known))


# -- the garbage collector ------------------------------------------------------


class CollectorPause:
    """Pauses the cyclic garbage collector while a listing's objects are
    made: 100,000 ``MessageInfo`` objects set off ~140 young collections
    and a full one, a third of loading a persisted listing (measured), and
    none can find anything, since those objects hold only strings and
    numbers.  The pause is process-wide, so it is counted: the last of
    overlapping loads resumes collection, and only if it was running.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0
        self._resume = False

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._count == 0:
                self._resume = gc.isenabled()
                gc.disable()
            self._count += 1
        try:
            yield
        finally:
            with self._lock:
                self._count -= 1
                if self._count == 0 and self._resume:
                    gc.enable()


collector_paused = CollectorPause()


# -- the persisted listing's format ---------------------------------------------------


def key_text(key: tuple[int, ...] | None) -> bytes:
    return b"-" if key is None else ",".join(map(str, key)).encode()


@dataclass(frozen=True, slots=True)
class StoredListing:
    """A listing file whose checksum holds, not parsed yet."""

    data: bytes
    count: int
    key: bytes  # see key_text
    body: int  # where the sections start


def check_listing(data: bytes) -> StoredListing:
    """Check a listing file's header and checksum; ValueError if it is not
    one this version wrote, whole."""
    if not data.startswith(_LISTING_PREFIX):
        raise ValueError("not a listing this version wrote")
    start = len(_LISTING_PREFIX)
    checksum = data[start : start + 8]
    if data[start + 8 : start + 9] != b" " or not all(c in b"0123456789abcdef" for c in checksum):
        raise ValueError("no checksum")
    if zlib.crc32(memoryview(data)[start + 9 :]) != int(checksum, 16):
        raise ValueError("checksum mismatch")
    end = data.find(b"\n", start)
    count, _, key = data[start + 9 : end].partition(b" ")
    if end < 0 or not count.isdigit() or not (key == b"-" or key.replace(b",", b"").isdigit()):
        raise ValueError("bad header")
    return StoredListing(data, int(count), key, end + 1)


def _listing_file(count: int, key: tuple[int, ...] | None, body: bytes) -> bytes:
    checked = b"%d %s\n%s" % (count, key_text(key), body)
    return b"%s%08x %s" % (_LISTING_PREFIX, zlib.crc32(checked), checked)


def rekeyed(stored: StoredListing, key: tuple[int, ...]) -> bytes:
    """A stored listing with a new key, its sections as they are."""
    return _listing_file(stored.count, key, stored.data[stored.body :])


def format_listing(snapshot: Snapshot, key: tuple[int, ...] | None) -> bytes | None:
    """The file for a listing of ``cur/`` alone; None if a name cannot be
    written (a LF in it, or mail left in ``new/``)."""
    listing = snapshot.listing
    uids = list(map(attrgetter("uid"), listing))
    names = "\n".join(snapshot.entries())
    if names.count("\n") != max(len(uids) - 1, 0) or "/" in names:
        return None
    sizes = ",".join(map(str, map(attrgetter("size"), listing)))
    ready = "".join(map("01".__getitem__, map(attrgetter("wire_ready"), listing)))
    body = os.fsencode("\0".join([names, "\n".join(uids), sizes, ready]))
    return _listing_file(len(uids), key, body)


#: Octets a uids section may hold: RFC 1939's 0x21..0x7E, and LF between uids.
_UID_SECTION_OCTETS = bytes(range(0x21, 0x7F)) + b"\n"


def parse_listing(stored: StoredListing, current: list[str] | None) -> Snapshot | None:
    """The stored listing if it was made from the ``cur/`` names
    ``current`` (None: its key vouches for it); None if from other names
    (stale); ValueError if it is not intact.  Each section is checked whole
    by C-level passes, so even a file made to pass the checksum (only the
    maildir's owner can) cannot point outside ``cur/`` or give a uid or
    size the protocol cannot send.
    """
    count = stored.count
    if current is not None and count != len(current):
        return None
    sections = stored.data.split(b"\0")  # the first one starts with the header
    if len(sections) != 4:
        raise ValueError("wrong number of sections")
    names_data, uids_data, sizes_data, ready = sections
    names_data = names_data[names_data.index(b"\n") + 1 :]
    if not count:
        if any((names_data, uids_data, sizes_data, ready)):
            raise ValueError("entries in an empty listing")
        return Snapshot([], [])
    if names_data.count(b"\n") != count - 1 or b"/" in names_data:
        raise ValueError("bad names")
    names: list[str] | bytes = names_data
    if current is not None:
        names = os.fsdecode(names_data).split("\n")
        if not same_names(current, names):
            return None
    if (
        uids_data.translate(None, _UID_SECTION_OCTETS)
        or sizes_data.translate(None, b"0123456789,")
        or ready.translate(None, b"01")
    ):
        raise ValueError("an octet out of place")
    uids = uids_data.decode("ascii").split("\n")
    sizes = json.loads(b"[" + sizes_data + b"]")  # digits only: ints; "1,,2" fails
    if not len(uids) == len(sizes) == len(ready) == count:
        raise ValueError("sections of different lengths")
    if min(map(len, uids)) == 0 or max(map(len, uids)) > UID_MAX:
        raise ValueError("bad uid length")
    return Snapshot(message_infos(uids, sizes, map(ord("1").__eq__, ready)), names)

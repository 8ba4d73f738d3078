"""Maildir listings as the store keeps them: the :class:`Snapshot` of an
open maildrop, and the format of ``popframe.listing``, the persisted
listing that lets the next session, in any process, skip making it (see
:meth:`~popframe.stores.maildir.directory.Maildir.load` for when a listing
is trusted).

The file: ``"popframe-listing 2 CRC32 COUNT KEY NAMES UIDS\n"``, then four
sections, one entry per message in listing order: the ``cur/`` names
joined by LF (NAMES octets), the uids joined by LF (UIDS octets), one octet
per message, 1 if it is wire-ready and 0 if not, and the sizes as unsigned
64-bit little-endian integers.  KEY is the settled directories' key a
readdir vouched for (its numbers joined by ``,``), or ``-``.  The CRC-32
(8 hex digits) covers everything after it.  Parsed by a few C-level splits
into a :class:`MessageList`, and checked section by section: 100,000
messages load in about 40 ms.
"""

from __future__ import annotations

import os
import sys
import zlib
from array import array
from dataclasses import dataclass

from popframe.interfaces import MessageList
from popframe.stores.maildir.names import UID_MAX

LISTING_NAME = "popframe.listing"
_LISTING_PREFIX = b"popframe-listing 2 "
#: The array type of 64-bit sizes.
_SIZE_TYPE = next(code for code in "QL" if array(code).itemsize == 8)
_EMPTY = MessageList([], [], b"")


def relative_path(entry: str) -> str:
    """The path in the maildir of a :class:`Snapshot` entry: a bare name
    lives in ``cur/``; mail that could not move keeps ``new/NAME``.  (Bare
    names let a listing share the strings readdir made.)
    """
    return entry if "/" in entry else "cur/" + entry


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
        listing: MessageList,
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
            self._where = dict(zip(self.listing.uids, self.entries(), strict=True))
        return self._where


def same_names(names: list[str], known: list[str]) -> bool:
    """Whether two lists of ``cur/`` names hold the same names; ``names``
    comes from readdir (no name twice).  An unchanged directory reads in
    the same order, and comparing lists is 20 times faster than sets.
    """
    return names == known or (len(names) == len(known) and frozenset(names) == frozenset(known))


# -- the persisted listing's format ---------------------------------------------------


def key_text(key: tuple[int, ...] | None) -> bytes:
    return b"-" if key is None else ",".join(map(str, key)).encode()


@dataclass(frozen=True, slots=True)
class StoredListing:
    """A listing file whose checksum and lengths hold, not parsed yet."""

    data: bytes
    count: int
    key: bytes  # see key_text
    body: int  # where the sections start
    names: int  # the names section's length
    uids: int  # the uids section's length


def is_older_listing(data: bytes) -> bool:
    """Whether ``data`` is a listing an earlier popframe wrote: expected
    once per maildrop after an upgrade, and simply made again."""
    return data.startswith(b"popframe-listing 1 ")


def check_listing(data: bytes) -> StoredListing:
    """Check a listing file's header, checksum and length; ValueError if it
    is not one this version wrote, whole."""
    if not data.startswith(_LISTING_PREFIX):
        raise ValueError("not a listing this version wrote")
    start = len(_LISTING_PREFIX)
    checksum = data[start : start + 8]
    if data[start + 8 : start + 9] != b" " or not all(c in b"0123456789abcdef" for c in checksum):
        raise ValueError("no checksum")
    if zlib.crc32(memoryview(data)[start + 9 :]) != int(checksum, 16):
        raise ValueError("checksum mismatch")
    end = data.find(b"\n", start)
    fields = data[start + 9 : end].split(b" ")
    if end < 0 or len(fields) != 4:
        raise ValueError("bad header")
    count, key, names, uids = fields
    if not all(f.isdigit() for f in (count, names, uids)) or not (
        key == b"-" or key.replace(b",", b"").isdigit()
    ):
        raise ValueError("bad header")
    stored = StoredListing(data, int(count), key, end + 1, int(names), int(uids))
    if len(data) - stored.body != stored.names + stored.uids + 9 * stored.count:
        raise ValueError("sections of the wrong lengths")
    return stored


def _listing_file(
    count: int, key: tuple[int, ...] | None, names: int, uids: int, body: bytes
) -> bytes:
    checked = b"%d %s %d %d\n%s" % (count, key_text(key), names, uids, body)
    return b"%s%08x %s" % (_LISTING_PREFIX, zlib.crc32(checked), checked)


def rekeyed(stored: StoredListing, key: tuple[int, ...]) -> bytes:
    """A stored listing with a new key, its sections as they are."""
    body = stored.data[stored.body :]
    return _listing_file(stored.count, key, stored.names, stored.uids, body)


def format_listing(snapshot: Snapshot, key: tuple[int, ...] | None) -> bytes | None:
    """The file for a listing of ``cur/`` alone; None if a name cannot be
    written (a LF in it, or mail left in ``new/``)."""
    listing = snapshot.listing
    count = len(listing)
    names = "\n".join(snapshot.entries())
    if names.count("\n") != max(count - 1, 0) or "/" in names:
        return None
    sizes = array(_SIZE_TYPE, listing.sizes)
    if sys.byteorder == "big":
        sizes.byteswap()
    names_data = os.fsencode(names)
    uids_data = os.fsencode("\n".join(listing.uids))
    body = b"".join([names_data, uids_data, listing.ready, sizes.tobytes()])
    return _listing_file(count, key, len(names_data), len(uids_data), body)


#: Octets a uids section may hold: RFC 1939's 0x21..0x7E, and LF between uids.
_UID_SECTION_OCTETS = bytes(range(0x21, 0x7F)) + b"\n"


def parse_listing(stored: StoredListing, current: list[str] | None) -> Snapshot | None:
    """The stored listing if it was made from the ``cur/`` names
    ``current`` (None: its key vouches for it); None if from other names
    (stale); ValueError if it is not intact.  Each section is checked whole
    by C-level passes, so even a file made to pass the checksum (only the
    maildir's owner can) cannot point outside ``cur/`` or give a uid the
    protocol cannot send.
    """
    count = stored.count
    if current is not None and count != len(current):
        return None
    if not count:
        if stored.names or stored.uids:
            raise ValueError("entries in an empty listing")
        return Snapshot(_EMPTY, [])
    data, at = stored.data, stored.body
    names_data = data[at : at + stored.names]
    at += stored.names
    uids_data = data[at : at + stored.uids]
    at += stored.uids
    ready = data[at : at + count]
    if names_data.count(b"\n") != count - 1 or b"/" in names_data:
        raise ValueError("bad names")
    names: list[str] | bytes = names_data
    if current is not None:
        names = os.fsdecode(names_data).split("\n")
        if not same_names(current, names):
            return None
    if uids_data.translate(None, _UID_SECTION_OCTETS) or ready.translate(None, b"\0\1"):
        raise ValueError("an octet out of place")
    uids = uids_data.decode("ascii").split("\n")
    if len(uids) != count or "" in uids or max(map(len, uids)) > UID_MAX:
        raise ValueError("bad uids")
    sizes = array(_SIZE_TYPE, data[at + count :])
    if sys.byteorder == "big":
        sizes.byteswap()
    return Snapshot(MessageList(uids, sizes, ready), names)

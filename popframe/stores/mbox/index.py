"""What popframe knows of an mbox's messages, kept so a later session does
not read the whole file again: the :class:`~popframe.stores.mbox.scan.Entry`
list and the file's key (device, inode, size, mtime) when it was made.

- The same key: the entries hold, nothing is read.
- The same file grown (mail appended): the entries hold if every one's
  ``From`` line is still where it was (one small read each) and a new one
  starts where the file ended; only the new part is scanned.
- Anything else (a rewrite by another program): scanned again.

Kept in this process (the last few hundred mboxes) and in
``.NAME.popframe-index`` beside the mbox (written atomically without
fsync: only a cache; a corrupt or foreign one is ignored and replaced).

UIDLs are given once and kept with the entries, so a message keeps its
UIDL whatever happens to the others: a new message gets its ``X-UIDL``
when that is a valid UIDL no listed message has (and not of the digest's
form, so no message can take another's digest), else the digest of its
``From`` line and octets (less the headers mail readers rewrite), with
``-2``, ``-3``... for byte-identical copies.  After a rewrite by another
program, messages are matched to their old UIDLs by digest; new ones
avoid every old UIDL and the last 1,000 of deleted messages, so a deleted
message's UIDL is not handed to a new one (not even to the same octets
delivered again in the same second) while the index remembers it.  (Only if the index is lost may a
message whose ``X-UIDL`` another message shares get a different UIDL.)
"""

from __future__ import annotations

import os
import re
import threading
import zlib
from collections import OrderedDict, defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from twisted.logger import Logger

from popframe.files import write_file_atomically
from popframe.interfaces import MessageList
from popframe.protocol.listing import valid_uid
from popframe.stores.mbox.files import INDEX, side_path
from popframe.stores.mbox.scan import Entry, scan

__all__ = ["Index", "assign_uids", "current_index", "is_digest_form"]

log = Logger(namespace="popframe.stores.mbox")

Key = tuple[int, int, int, int]
_MAGIC = b"popframe-mbox-index 3\n"
_DIGEST_FORM = re.compile(r"h[0-9a-f]{40}")
_REMEMBERED: OrderedDict[str, Index] = OrderedDict()
_REMEMBER_MAX = 256
#: UIDLs of deleted messages kept so that no new message gets one.
_RETIRED_MAX = 1000
_REMEMBERED_LOCK = threading.Lock()  # steps run in several threads


@dataclass(frozen=True, slots=True)
class Index:
    key: Key
    entries: tuple[Entry, ...]
    uids: tuple[str, ...]
    #: UIDLs of messages gone from the file (the last _RETIRED_MAX).
    retired: tuple[str, ...] = ()

    def retiring(self, gone: Iterable[str]) -> tuple[str, ...]:
        return (*self.retired, *gone)[-_RETIRED_MAX:]

    def listing(self) -> MessageList:
        return MessageList(list(self.uids), [e.size for e in self.entries],
                           bytes(e.ready for e in self.entries))


def file_key(st: os.stat_result) -> Key:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def assign_uids(entries: Sequence[Entry], previous: Index | None = None,
                avoid: Iterable[str] = ()) -> tuple[str, ...]:
    """UIDLs for ``entries`` (see the module's docstring): a message of
    ``previous`` (matched by digest) keeps its UIDL; the others get new
    ones that no message and nothing in ``avoid`` has."""
    carried: defaultdict[str, deque[str]] = defaultdict(deque)
    if previous is not None:
        for entry, uid in zip(previous.entries, previous.uids, strict=True):
            carried[entry.digest].append(uid)
    uids: list[str | None] = []
    for entry in entries:
        uids.append(carried[entry.digest].popleft() if carried.get(entry.digest) else None)
    taken = {uid for uid in uids if uid is not None} | set(avoid)
    if previous is not None:
        taken.update(previous.uids)
    for i, entry in enumerate(entries):
        if uids[i] is None:
            uids[i] = _new_uid(entry, taken)
            taken.add(uids[i])  # type: ignore[arg-type]
    return tuple(uids)  # type: ignore[arg-type]


def is_digest_form(uid: str) -> bool:
    """Whether ``uid`` looks like a digest uid, which an X-UIDL cannot give."""
    return _DIGEST_FORM.fullmatch(uid) is not None


def _new_uid(entry: Entry, taken: set[str]) -> str:
    uid = entry.x_uidl
    if uid is not None and valid_uid(uid) and uid not in taken and not is_digest_form(uid):
        return uid
    uid, copy = entry.digest, 1
    while uid in taken:
        copy += 1
        uid = f"{entry.digest}-{copy}"
    return uid


def current_index(fd: int, path: str) -> Index:
    """The index of the mbox open at ``fd`` (under its locks), from what
    is remembered or stored where it still holds, else made by reading."""
    st = os.fstat(fd)
    key = file_key(st)
    with _REMEMBERED_LOCK:
        known = _REMEMBERED.get(path)
    if known is None or known.key[:2] != key[:2]:
        known = read_index(path)
    if known is not None and known.key == key:
        index = known
    else:
        start, kept = _reusable(fd, known, key)
        added = scan(fd, start, st.st_size)
        if kept:
            assert known is not None
            uids = known.uids + assign_uids(added, avoid=(*known.uids, *known.retired))
            retired = known.retired
        elif known is not None:
            uids = assign_uids(added, previous=known, avoid=known.retired)
            retired = known.retiring(set(known.uids).difference(uids))
        else:
            uids, retired = assign_uids(added), ()
        index = Index(key, (*kept, *added), uids, retired)
        write_index(path, index)
    remember(path, index)
    return index


def _reusable(fd: int, known: Index | None, key: Key) -> tuple[int, tuple[Entry, ...]]:
    """Where to scan from, and the entries before it that still hold."""
    if known is None or known.key[:2] != key[:2] or key[2] <= known.key[2]:
        return 0, ()
    old_size = known.key[2]
    if not known.entries:
        return (old_size, ()) if old_size == 0 else (0, ())
    if os.pread(fd, 6, old_size - 1) != b"\nFrom ":
        return 0, ()
    for entry in known.entries:
        if zlib.crc32(os.pread(fd, entry.content - entry.start, entry.start)) != entry.from_crc:
            return 0, ()
    return old_size, known.entries


def remember(path: str, index: Index) -> None:
    with _REMEMBERED_LOCK:
        _REMEMBERED[path] = index
        _REMEMBERED.move_to_end(path)
        while len(_REMEMBERED) > _REMEMBER_MAX:
            _REMEMBERED.popitem(last=False)


def forget(path: str) -> None:
    with _REMEMBERED_LOCK:
        _REMEMBERED.pop(path, None)


# -- the file ------------------------------------------------------------------------


def _format(index: Index) -> bytes:
    retired = b" ".join([b"retired", *(uid.encode() for uid in index.retired)])
    lines = [b"%d %d %d %d" % index.key, retired]
    for e, uid in zip(index.entries, index.uids, strict=True):
        lines.append(b"%d %d %d %d %d %d %d %s %s %s" % (
            e.start, e.content, e.content_end, e.end, e.size, e.ready, e.from_crc,
            e.digest.encode(),
            b"-" if e.x_uidl is None else e.x_uidl.encode("utf-8").hex().encode(),
            uid.encode("ascii"),
        ))
    body = b"\n".join(lines) + b"\n"
    return _MAGIC + b"%08x\n" % zlib.crc32(body) + body


def _parse(data: bytes) -> Index:
    if not data.startswith(_MAGIC):
        raise ValueError("not a popframe mbox index")
    rest = data[len(_MAGIC):]
    crc, _, body = rest.partition(b"\n")
    if int(crc, 16) != zlib.crc32(body):
        raise ValueError("checksum mismatch")
    lines = body.split(b"\n")[:-1]
    key = tuple(int(n) for n in lines[0].split())
    if len(key) != 4:
        raise ValueError("bad key")
    retired = lines[1].split(b" ")
    if retired[0] != b"retired":
        raise ValueError("bad retired uids")
    entries, uids = [], []
    for line in lines[2:]:
        f = line.split(b" ")
        x_uidl = None if f[8] == b"-" else bytes.fromhex(f[8].decode()).decode("utf-8")
        entries.append(Entry(int(f[0]), int(f[1]), int(f[2]), int(f[3]), int(f[4]), f[5] == b"1",
                             int(f[6]), x_uidl, f[7].decode("ascii")))
        uids.append(f[9].decode("ascii"))
    if len(set(uids)) != len(uids) or not all(valid_uid(uid) for uid in uids):
        raise ValueError("bad uids")
    return Index(key, tuple(entries), tuple(uids),
                 tuple(u.decode("ascii") for u in retired[1:]))


def read_index(path: str) -> Index | None:
    where = side_path(path, INDEX)
    try:
        fd = os.open(where, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        log.warn("cannot read {path}: {error}", path=where, error=e)
        return None
    try:
        with os.fdopen(fd, "rb") as f:
            return _parse(f.read())
    except (OSError, ValueError, IndexError, UnicodeError) as e:
        log.warn("ignoring {path}: {error}", path=where, error=e)
        return None


def write_index(path: str, index: Index) -> None:
    where = side_path(path, INDEX)
    try:
        write_file_atomically(where, _format(index), durable=False)
    except OSError as e:
        log.warn("cannot write {path}: {error}", path=where, error=e)

"""Maildir, as Postfix, Dovecot and Courier write it.

A session sees a snapshot: at open, under the lock, mail in ``new/`` moves
to ``cur/`` (adding ``:2,``, as an MUA that has seen it would), then ``cur/``
is listed oldest first.  Mail delivered later is neither listed nor
deleted.  Other agents (an IMAP server, a MUA) ignore our lock, so a listed
file may be renamed (new flags) or deleted under us: files are found again
by their base name, and a file that is gone is no error at commit.

Files popframe keeps in the maildir root (Dovecot ignores them):

- ``popframe.lock``: the flock target; never removed.
- ``popframe.sizes``: a cache of computed RETR sizes (and whether the file
  already is its wire form) by base name, so the next listing of a large
  maildrop reads no message.  Only a cache: losing or corrupting it costs
  one re-read.
- ``popframe.listing``: the last listing, with the ``cur/`` names it was
  made from and, once a readdir found those names while ``cur/`` and
  ``new/`` had not changed for a second, their key (inode and ctime).
  Maildir names are content keys (a flag change is a rename), so while
  ``cur/`` holds those names, or the key holds, the listing is still
  right, and the next session, in any process, skips making it.  Only a
  cache too: a stale, corrupt or foreign one is ignored and replaced.
- ``popframe.journal``: the names a commit is deleting.  It is durable
  before the first unlink, so a crash mid-commit is finished by the next
  open: a commit is all or none.

Nothing follows symlinks inside the maildir, so a user with a shell cannot
make the server read ``/etc/shadow`` through ``cur/``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
import threading
import time
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from typing import BinaryIO

from twisted.internet import defer
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from zope.interface import implementer

from popframe.config import ConfigurationError
from popframe.errors import NoSuchMessage, TemporaryFailure
from popframe.files import fsync_directory, write_file_atomically
from popframe.interfaces import (
    IMaildrop,
    IMaildropLock,
    IMaildropLocker,
    IMaildropStore,
    IMaildropStoreFactory,
    MessageList,
    UserSettings,
)
from popframe.protocol.encoding import WireForm, wire_form
from popframe.stores import LockedMaildrop, RunBlocking
from popframe.stores.listing import (
    UID_MAX,
    Snapshot,
    StoredListing,
    check_listing,
    collector_paused,
    format_listing,
    is_older_listing,
    key_text,
    parse_listing,
    rekeyed,
    relative_path,
    same_names,
)
from popframe.stores.locking import FileLocker
from popframe.stores.template import PathTemplate, UnsafeUserName

log = Logger()

LOCK_NAME = "popframe.lock"
SIZES_NAME = "popframe.sizes"
LISTING_NAME = "popframe.listing"
JOURNAL_NAME = "popframe.journal"
_JOURNAL_VERSION = 1
_DIR_MODE = 0o700
_CHUNK = 1 << 16

#: Maildir's info part starts at ':'; systems that cannot have ':' in file
#: names use ';' or '!' instead.
_OTHER_INFO = re.compile(r"[;!]2,[A-Za-z]*$")
_VIRTUAL_SIZE = re.compile(r",W=(\d+)")
_SIZES_HEADER = "popframe-sizes 2"
_SIZES_HEADER_V1 = "popframe-sizes 1"  # sizes without ready flags: read as not ready
#: Temporary files of a write_file_atomically a crash interrupted.
_TEMPORARY_PREFIXES = tuple(f".{name}." for name in (JOURNAL_NAME, SIZES_NAME, LISTING_NAME))

#: Messages the remembered listings may hold in all (a few hundred bytes
#: each): thousands of ordinary maildrops, or one of 100,000.
_REMEMBERED_MESSAGES = 100_000
_SETTLED_NS = 1_000_000_000
#: Listings up to this long map uids to files on the reactor thread (a
#: fraction of a millisecond); longer ones in a thread.
_MAP_INLINE = 2000
#: Shorter listings are not stored: making one again costs about what
#: storing and loading it would (20 messages: made in 60 us, stored in 200).
_STORE_MIN = 256
#: A listing whose ``cur/`` names changed by at most this many names (added
#: plus removed), or by a tenth of the listing if that is more, is updated
#: rather than made again (see Maildir._update).
_UPDATE_MIN = 16
_UPDATE_FRACTION = 10
#: The uids a digest gives; a listing holding one is never updated.
_DIGEST_UID = re.compile(r"h[0-9a-f]{40}")
_DIGEST_UID_LINE = re.compile(r"\nh[0-9a-f]{40}\n")

#: A size cache entry: the RETR size and whether the file is its wire form.
Form = tuple[int, bool]
#: A message being listed: (sort key, base, relative path, entry, size, ready).
_Row = tuple[str, str, str, str, int, bool]


class MessageVanished(TemporaryFailure):
    """Another client removed the message during this session.

    Not ``NoSuchMessage``: that is the client's fault and counts towards its
    bad-command limit.  A reconnect lists the maildrop as it now is, so
    "try again later" is the honest answer.
    """

    default_message = "message was removed by another client, please reconnect"


# -- file names -------------------------------------------------------------


def base_name(name: str) -> str:
    """The part of a maildir file name that never changes: before the info."""
    base, sep, _ = name.partition(":")
    if sep:
        return base
    match = _OTHER_INFO.search(name)
    return name[: match.start()] if match else name


def uid_for(base: str) -> str:
    """The base name when it is a valid UIDL, else a stable digest of it."""
    if 0 < len(base) <= UID_MAX and base.isascii() and base.isprintable() and " " not in base:
        return base
    return digest_uid(base)


def digest_uid(text: str) -> str:
    return "h" + hashlib.sha1(os.fsencode(text)).hexdigest()


def delivery_order(base: str) -> str:
    """A sort key for "oldest first": the delivery second the name starts
    with (``1700000000.M123456P42.host``), then the name.  A string, not a
    tuple, because sorting 100,000 strings is several times faster; the
    length of the number first makes string order numeric order.
    """
    head = base.partition(".")[0]
    if head.isdigit() and head.isascii() and len(head) < 32:
        return chr(0x40 + len(head)) + base
    return "\x7f" + base  # no timestamp: after all that have one


def size_from_name(base: str) -> int | None:
    """Dovecot's ``,W=`` virtual size: the message with CRLF line ends."""
    match = _VIRTUAL_SIZE.search(base)
    return int(match.group(1)) if match and match.group(1).isascii() else None


def cur_order(name: str) -> str:
    """The sort key a build gives the ``cur/`` file ``name`` (see
    :meth:`Maildir._rows`)."""
    return delivery_order(base_name(name)) + "\0cur/" + name


def open_regular(path: str) -> BinaryIO:
    """Open a message for reading without following a symlink or blocking
    on a FIFO someone put in its place.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def file_wire_form(path: str) -> WireForm:
    """RETR size and readiness of a stored message, in one read."""
    with open_regular(path) as f:
        return wire_form(iter(lambda: f.read(_CHUNK), b""))


# -- the directory ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Known:
    """A listing and what makes it still right: the ``cur/`` names it was
    made from (in readdir order), and the directories' key if they had
    settled (see :meth:`Maildir._directories_key`).
    """

    snapshot: Snapshot
    names: list[str] | None  # None: the snapshot's entries (all in cur/)
    key: tuple[int, ...] | None

    def cur_names(self) -> list[str]:
        return self.snapshot.entries() if self.names is None else self.names


class _Remembered:
    """Listings of recently opened maildirs, by path (see Maildir.load),
    the least recently used out first once they hold more than
    ``_REMEMBERED_MESSAGES`` messages in all; the newest always stays.
    Bounded by messages, not maildirs: a count of 64 maildirs made a server
    polled by a few hundred users list every maildrop again in a thread at
    every login.  Read on the reactor thread and written by loads in
    threads, hence the lock.
    """

    def __init__(self) -> None:
        self._known: OrderedDict[str, _Known] = OrderedDict()
        self._messages = 0
        self._lock = threading.Lock()

    def recall(self, path: str) -> _Known | None:
        with self._lock:
            known = self._known.get(path)
            if known is not None:
                self._known.move_to_end(path)
            return known

    def remember(self, path: str, known: _Known) -> None:
        with self._lock:
            self._drop(path)
            self._known[path] = known
            self._messages += len(known.snapshot.listing)
            while self._messages > _REMEMBERED_MESSAGES and len(self._known) > 1:
                self._drop(next(iter(self._known)))

    def forget(self, path: str) -> None:
        with self._lock:
            self._drop(path)

    def clear(self) -> None:
        with self._lock:
            self._known.clear()
            self._messages = 0

    def __getitem__(self, path: str) -> _Known:
        return self._known[path]

    def __len__(self) -> int:
        return len(self._known)

    def _drop(self, path: str) -> None:
        known = self._known.pop(path, None)
        if known is not None:
            self._messages -= len(known.snapshot.listing)


_LISTINGS = _Remembered()


class Maildir:
    """Blocking operations on one maildir; run them off the reactor thread,
    except :meth:`prepare` and :meth:`load_unchanged`, which are a few stat
    calls when nothing needs doing.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock_path = os.path.join(path, LOCK_NAME)

    def _at(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    # -- open ---------------------------------------------------------------

    def prepare(self, create: bool) -> bool:
        """Make sure the maildir exists (creating it, as Dovecot does at
        first login, when ``create``).  False if it is missing.
        """
        if self._complete(create):
            return True
        if create:
            _make_dirs(self.path)
            for sub in ("cur", "new", "tmp"):
                _make_dirs(self._at(sub))
        elif not os.path.isdir(self.path):
            return False
        for sub in ("cur", "new"):
            mode = _lstat_mode(self._at(sub))
            if mode is not None and not stat.S_ISDIR(mode):
                raise OSError(errno.ENOTDIR, "not a real directory", self._at(sub))
        return True

    def _complete(self, create: bool) -> bool:
        """The usual case in two or three lstat calls: ``cur/`` and ``new/``
        (and ``tmp/`` when we would make it) are real directories."""
        for sub in ("cur", "new", "tmp") if create else ("cur", "new"):
            mode = _lstat_mode(self._at(sub))
            if mode is None or not stat.S_ISDIR(mode):
                return False
        return True

    def load_unchanged(self) -> Snapshot | None:
        """The remembered listing if nothing can have changed since it was
        made (no journal to finish; ``cur/`` and ``new/`` settled and as
        they were then, so ``new/`` still has nothing to move), else None.
        Three stat calls and no readdir: cheap enough for the reactor
        thread, under the lock.
        """
        known = _LISTINGS.recall(self.path)
        if known is None or known.key is None:
            return None
        try:
            os.lstat(self._at(JOURNAL_NAME))
            return None  # an interrupted commit: load() finishes it
        except FileNotFoundError:
            pass
        except OSError:
            return None  # load() reports it
        try:
            key = self._directories_key()
        except OSError:
            return None
        return known.snapshot if key == known.key else None

    def load(self) -> Snapshot:
        """Finish an interrupted commit, move new mail to ``cur/``, list.

        A listing is made again only when the names in ``cur/`` changed
        (names are content keys): one remembered here or in
        ``popframe.listing`` is reused when a readdir finds the names it
        was made from, and updated when they differ by a few names (new
        mail, a deletion, new flags), unless only a build is sure to give
        the same listing (see :meth:`_update`).  Without a readdir, a listing is reused while
        ``cur/`` and ``new/`` keep the inode and ctime they had when a
        readdir vouched for it, if both were then a second old: any change
        after that gives a newer ctime, so this can never miss a change
        (coarse clocks included).
        """
        hidden = self.recover()
        leftover = self._move_new()
        if hidden or leftover:  # rare: list from scratch, remember nothing
            found = [(name, "cur/" + name) for name in _regular_files(self._at("cur"))]
            found += [(name, "new/" + name) for name in leftover]
            return self._snapshot(found, hidden)
        key = self._directories_key()
        known = _LISTINGS.recall(self.path)
        if known is not None and key is not None and known.key == key:
            return known.snapshot
        stored = self._read_listing()
        if stored is not None and key is not None and stored.key == key_text(key):
            snapshot = self._parse_listing(stored, None)  # the key vouches: no readdir
            if snapshot is not None:
                _LISTINGS.remember(self.path, _Known(snapshot, None, key))
                return snapshot
            stored = None  # not intact (logged)
        names = list(_regular_files(self._at("cur")))
        if known is not None and same_names(names, known.cur_names()):
            snapshot, made = known.snapshot, "remembered"
        elif stored is not None and (snapshot := self._parse_listing(stored, names)) is not None:
            made = "stored"
        elif (snapshot := self._updated(known, stored, names)) is not None:
            made = "updated"
            if len(snapshot.listing) != len(names):  # an added file vanished meanwhile
                names = snapshot.entries()
        else:
            found = [(name, "cur/" + name) for name in names]
            snapshot, made = self._snapshot(found, set()), "built"
            if len(snapshot.listing) != len(names):  # some vanished meanwhile
                names = snapshot.entries()
        settled = key if key is not None and key == self._directories_key() else None
        if settled is None and made == "built":
            settled = self._settled_since(names)
        self._store(snapshot, made, stored, settled)
        _LISTINGS.remember(self.path, _Known(snapshot, names, settled))
        return snapshot

    def _store(
        self,
        snapshot: Snapshot,
        made: str,
        stored: StoredListing | None,
        key: tuple[int, ...] | None,
    ) -> None:
        """Write ``popframe.listing`` unless it already says this: a listing
        made here, or a settled key it lacks (so other processes skip the
        readdir).  A short listing is not worth a file."""
        if len(snapshot.listing) < _STORE_MIN:
            if made in ("built", "updated"):  # a file from when it was long, or a corrupt one
                _remove_quietly(self._at(LISTING_NAME))
            return
        missing = stored is None or stored.count != len(snapshot.listing)  # (a cheap check)
        if made in ("built", "updated") or (made == "remembered" and missing):
            self._write_listing(format_listing(snapshot, key))
        elif key is not None and stored is not None and stored.key != key_text(key):
            if made == "stored":
                self._write_listing(rekeyed(stored, key))
            else:
                self._write_listing(format_listing(snapshot, key))

    def _updated(
        self, known: _Known | None, stored: StoredListing | None, names: list[str]
    ) -> Snapshot | None:
        """The listing of ``names`` (just read from ``cur/``) updated from
        the remembered listing, else the stored one; None if neither is
        near enough, or only a build is sure to give the same listing."""
        limit = max(_UPDATE_MIN, len(names) // _UPDATE_FRACTION)
        if known is not None and abs(len(known.snapshot.listing) - len(names)) <= limit:
            with collector_paused():  # (the size cache's tuples)
                snapshot = self._update(known.snapshot, names, limit)
            if snapshot is not None:
                return snapshot
        if stored is None or abs(stored.count - len(names)) > limit:
            return None
        old = self._parse_listing(stored, None)
        if old is None:
            return None
        with collector_paused():
            return self._update(old, names, limit)

    def _update(self, old: Snapshot, names: list[str], limit: int) -> Snapshot | None:
        """What a build of ``names`` gives, made from ``old``: remove the
        entries whose names went, and place the added ones by the build's
        sort key.  Only when uids cannot depend on neighbours: ``old`` has
        no digest uid (so each uid is its base name, and no two files share
        a base), and every added name's base is a valid, unused uid.  Files
        are read, and the size cache written, only once that is sure.
        """
        entries = old.entries()
        added = set(names).difference(entries)
        removed = set(entries).difference(names)
        if (not added and not removed) or len(added) + len(removed) > limit:
            return None
        uids = list(old.listing.uids)
        if len(uids) != len(entries) or _DIGEST_UID_LINE.search("\n" + "\n".join(uids) + "\n"):
            return None
        doomed = _positions(entries, removed)
        if doomed is None:
            return None
        taken = set(uids).difference(uids[i] for i in doomed)
        bases = {base_name(name) for name in added}
        if len(bases) != len(added) or not bases.isdisjoint(taken):
            return None
        if not all(uid_for(b) == b and not _DIGEST_UID.fullmatch(b) for b in bases):
            return None
        gone = {base_name(name) for name in removed}.difference(bases)
        rows = self._added_rows(sorted(added), gone)
        sizes, ready, kept = list(old.listing.sizes), bytearray(old.listing.ready), list(entries)
        for i in sorted(doomed, reverse=True):
            del uids[i], sizes[i], ready[i], kept[i]
        for order, base, _, entry, size, is_ready in rows:
            i = bisect_left(kept, order, key=cur_order)
            kept.insert(i, entry)
            uids.insert(i, base)
            sizes.insert(i, size)
            ready.insert(i, is_ready)
        return Snapshot(MessageList(uids, sizes, bytes(ready)), kept)

    def _added_rows(self, added: list[str], gone: set[str]) -> list[_Row]:
        """The rows of the ``cur/`` names ``added``, sorted; the size cache
        gains what was read and loses the base names ``gone``, as a build
        would have it."""
        cache = self._read_sizes()
        rows, _, computed = self._rows([(name, "cur/" + name) for name in added], set(), cache)
        if computed or not gone.isdisjoint(cache):
            for base in gone:
                cache.pop(base, None)
            self._write_sizes({**cache, **computed})
        rows.sort(key=itemgetter(0))
        return rows

    def _settled_since(self, names: list[str]) -> tuple[int, ...] | None:
        """A key for a listing that took long to make (a large maildrop's
        first): if the directories have settled meanwhile, one more readdir
        that finds the same names proves the listing matches the key, so
        the next open, in any process, needs no readdir.
        """
        key = self._directories_key()
        if key is None or not same_names(list(_regular_files(self._at("cur"))), names):
            return None
        return key if key == self._directories_key() else None

    def _directories_key(self) -> tuple[int, ...] | None:
        """What changes when ``cur/`` or ``new/`` does; None while either
        changed less than a second ago (too recent to trust)."""
        key: list[int] = []
        settled = time.time_ns() - _SETTLED_NS
        for sub in ("cur", "new"):
            try:
                st = os.stat(self._at(sub))
            except FileNotFoundError:
                key += [0, 0, 0]
                continue
            # ctime: every change to the directory moves it, and unlike
            # mtime nothing can set it back.
            if st.st_ctime_ns > settled:
                return None
            key += [st.st_dev, st.st_ino, st.st_ctime_ns]
        return tuple(key)

    def _move_new(self) -> list[str]:
        """Move ``new/`` to ``cur/``; return the names that stayed behind
        (read-only maildir, or a name already taken in ``cur/``).
        """
        stayed = []
        for name in _regular_files(self._at("new")):
            target = name if ":" in name else name + ":2,"
            try:
                if os.path.lexists(self._at("cur", target)):
                    raise FileExistsError(errno.EEXIST, "name taken", target)
                os.rename(self._at("new", name), self._at("cur", target))
            except FileNotFoundError:
                pass  # another agent moved or deleted it: cur/ shows it
            except OSError as e:
                log.warn("cannot move {name} to cur/: {error}", name=self._at("new", name), error=e)
                stayed.append(name)
        return stayed

    def _snapshot(self, found: list[tuple[str, str]], hidden: set[str]) -> Snapshot:
        """List ``found`` (name, relative path) oldest first.  Runs once
        per message whenever the names in ``cur/`` change too much for
        :meth:`_updated`, so it sticks to C-level string methods and looks
        sizes up rather than reading files.
        """
        cache = self._read_sizes()
        rows, cached, computed = self._rows(found, hidden, cache)
        if computed or len(cached) != len(cache):
            self._write_sizes({**{b: cache[b] for b in cached}, **computed})
        rows.sort(key=itemgetter(0))
        where: dict[str, str] = {}
        for _, base, relative, entry, _, _ in rows:
            uid = uid_for(base)
            if uid in where:  # the same base twice, e.g. a copied file
                uid = digest_uid(relative)
            where[uid] = entry
        sizes = list(map(itemgetter(4), rows))
        listing = MessageList(list(where), sizes, bytes(map(itemgetter(5), rows)))
        return Snapshot(listing, list(where.values()), where)

    def _rows(
        self, found: list[tuple[str, str]], hidden: set[str], cache: dict[str, Form]
    ) -> tuple[list[_Row], list[str], dict[str, Form]]:
        """The rows of ``found`` (a file gone meanwhile has none), the
        cached base names they used, and the forms read from files.  One
        loop for a build and an update, so both give the same sizes."""
        computed: dict[str, Form] = {}
        cached: list[str] = []
        rows: list[_Row] = []
        for name, relative in found:
            base, info, _ = name.partition(":")
            if not info:
                base = base_name(name)
            if base in hidden:
                continue
            form = cache.get(base)
            size = size_from_name(base) if ",W=" in base else None
            if size is not None:  # not read; ready only if the cache knows
                if form is not None and form[0] == size:
                    cached.append(base)
                form = (size, form is not None and form[0] == size and form[1])
            elif form is not None:
                cached.append(base)
            else:
                try:
                    found_form = file_wire_form(self._at(relative))
                except FileNotFoundError:
                    continue  # deleted by another agent meanwhile
                form = computed[base] = (found_form.size, found_form.ready)
            entry = name if relative.startswith("cur/") else relative
            rows.append((delivery_order(base) + "\0" + relative, base, relative, entry, *form))
        return rows, cached, computed

    # -- the size cache -------------------------------------------------------
    #
    # "popframe-sizes 2\n", the base names joined by LF, NUL, the sizes
    # joined by ",", NUL, one "1" (wire-ready) or "0" per name: parsed by a
    # few C-level splits, no per-line Python.  Version 1 (no flags) is read
    # as not wire-ready rather than thrown away: re-reading every message
    # of every maildrop after an upgrade would cost more than encoding the
    # few old messages a client fetches again.

    def _read_sizes(self) -> dict[str, Form]:
        data = self._read_cache(SIZES_NAME, "size cache")
        if not data:
            return {}
        header, _, body = os.fsdecode(data).partition("\n")
        try:
            if header == _SIZES_HEADER:
                names, sizes, flags = body.split("\0")
            elif header == _SIZES_HEADER_V1:
                names, _, sizes = body.partition("\0")
                flags = None
            else:
                raise ValueError("unknown format")
            if not names:
                return {}
            keys = names.split("\n")
            numbers = list(map(int, sizes.split(",")))
            if min(numbers) < 0:
                raise ValueError("negative size")
            if flags is not None and flags.strip("01"):
                raise ValueError("bad flags")
            ready = repeat(False, len(keys)) if flags is None else map("1".__eq__, flags)
            return dict(zip(keys, zip(numbers, ready, strict=True), strict=True))
        except ValueError as e:
            log.warn("ignoring size cache {path}: {error}", path=self._at(SIZES_NAME), error=e)
            return {}

    def _write_sizes(self, forms: dict[str, Form]) -> None:
        """Replace the cache atomically; without fsync, since a cache lost
        in a crash is only recomputed.
        """
        usable = {b: form for b, form in forms.items() if "\n" not in b}
        names = "\n".join(usable)
        numbers = ",".join(map(str, map(itemgetter(0), usable.values())))
        flags = "".join(map("01".__getitem__, map(itemgetter(1), usable.values())))
        text = f"{_SIZES_HEADER}\n{names}\0{numbers}\0{flags}"
        self._write_cache(SIZES_NAME, "size cache", os.fsencode(text))

    def _read_cache(self, name: str, what: str) -> bytes | None:
        """A cache file's bytes; None if missing or unreadable (logged).
        Opened like a message, so a FIFO planted there cannot hang us."""
        try:
            with open_regular(self._at(name)) as f:
                return f.read()
        except FileNotFoundError:
            return None
        except OSError as e:
            log.warn("cannot read {what} {path}: {error}", what=what, path=self._at(name), error=e)
            return None

    def _write_cache(self, name: str, what: str, data: bytes) -> None:
        try:
            write_file_atomically(self._at(name), data, durable=False)
        except OSError as e:
            log.warn("cannot write {what} {path}: {error}", what=what, path=self._at(name), error=e)

    # -- the persisted listing (its format: popframe.stores.listing) -------------

    def _read_listing(self) -> StoredListing | None:
        data = self._read_cache(LISTING_NAME, "listing")
        if data is None or is_older_listing(data):
            return None
        try:
            return check_listing(data)
        except ValueError as e:
            log.warn("ignoring listing {path}: {error}", path=self._at(LISTING_NAME), error=e)
            return None

    def _parse_listing(self, stored: StoredListing, names: list[str] | None) -> Snapshot | None:
        """The stored listing if made from the ``cur/`` names ``names``
        (read just now; None: the key vouched for it)."""
        try:
            return parse_listing(stored, names)
        except ValueError as e:
            log.warn("ignoring listing {path}: {error}", path=self._at(LISTING_NAME), error=e)
            return None

    def _write_listing(self, data: bytes | None) -> None:
        if data is not None:
            self._write_cache(LISTING_NAME, "listing", data)

    # -- finding a renamed message ----------------------------------------------

    def find(self, relative: str) -> str | None:
        """Where the message once at ``relative`` lives now (an IMAP client
        may have renamed it to change flags, or moved it from ``new/``).
        """
        base = base_name(relative.partition("/")[2])
        for name in _regular_files(self._at("cur")):
            if base_name(name) == base:
                return "cur/" + name
        if os.path.lexists(self._at(relative)):
            return relative
        return None

    def open_message(self, relative: str) -> BinaryIO:
        return open_regular(self._at(relative))

    # -- commit -------------------------------------------------------------------

    def delete(self, relatives: list[str]) -> None:
        """Delete all or none: the journal is durable before the first unlink,
        so after a crash :meth:`recover` finishes the job.
        """
        if not relatives:
            return
        data = json.dumps({"version": _JOURNAL_VERSION, "delete": relatives})
        write_file_atomically(self._at(JOURNAL_NAME), data.encode(), durable=True)
        self._apply(relatives)
        os.unlink(self._at(JOURNAL_NAME))

    def recover(self) -> set[str]:
        """Finish a commit a crash interrupted.  Returns the base names it
        could not delete yet, which the listing hides: the commit happened.
        """
        # Temporary files of a write_file_atomically a crash interrupted.
        for name in os.listdir(self.path):
            if name.startswith(_TEMPORARY_PREFIXES) and name.endswith(".tmp"):
                _remove_quietly(self._at(name))
        try:
            with open_regular(self._at(JOURNAL_NAME)) as f:  # not a planted FIFO
                journal = json.load(f)
            relatives = journal["delete"]
            if journal["version"] != _JOURNAL_VERSION or not all(map(_is_message_path, relatives)):
                raise ValueError("not a journal this version wrote")
        except FileNotFoundError:
            return set()
        except (ValueError, TypeError, KeyError) as e:
            # Written atomically, so this is not our crash: keep the mail.
            log.error(
                "discarding unreadable journal {path}: {error}",
                path=self._at(JOURNAL_NAME),
                error=e,
            )
            _remove_quietly(self._at(JOURNAL_NAME))
            return set()
        try:
            self._apply(relatives)
            os.unlink(self._at(JOURNAL_NAME))
        except OSError as e:
            log.error("cannot finish journal {path}: {error}", path=self._at(JOURNAL_NAME), error=e)
            return {base_name(r.partition("/")[2]) for r in relatives}
        log.info("finished an interrupted commit in {path}", path=self.path)
        return set()

    def _apply(self, relatives: list[str]) -> None:
        """Unlink each file, or whatever it was renamed to in ``cur/``; a
        file already gone is fine.  Then make the unlinks durable.
        """
        touched = {r.partition("/")[0] for r in relatives}
        current: dict[str, list[str]] | None = None  # base -> cur/ names
        for relative in relatives:
            try:
                os.unlink(self._at(relative))
                continue
            except FileNotFoundError:
                pass
            if current is None:
                current = {}
                for name in _regular_files(self._at("cur")):
                    current.setdefault(base_name(name), []).append(name)
            candidates = current.pop(base_name(relative.partition("/")[2]), [])
            if len(candidates) == 1:  # two files with one base: keep both
                _remove_quietly(self._at("cur", candidates[0]), strict=True)
                touched.add("cur")
        for sub in sorted(touched):
            fsync_directory(self._at(sub))


# -- filesystem helpers ---------------------------------------------------------


def _is_message_path(relative: object) -> bool:
    """``cur/NAME`` or ``new/NAME`` and nothing else: a journal planted by
    someone with write access to the maildir must not delete outside it.
    """
    if not isinstance(relative, str):
        return False
    sub, _, name = relative.partition("/")
    return (
        sub in ("cur", "new")
        and name not in ("", ".", "..")
        and "/" not in name
        and "\0" not in name
    )


def _positions(entries: list[str], names: set[str]) -> list[int] | None:
    """Where in a listing's ``entries`` (in build order) the ``cur/`` names
    ``names`` are; None if one is not where the order puts it."""
    positions = []
    for name in names:
        i = bisect_left(entries, cur_order(name), key=cur_order)
        if "/" in name or i == len(entries) or entries[i] != name:
            return None
        positions.append(i)
    return positions


def _regular_files(directory: str) -> Iterator[str]:
    """Names of the regular files in ``directory`` (no dot-files, no
    symlinks); nothing if it does not exist.
    """
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name[0] != "." and entry.is_file(follow_symlinks=False):
                    yield entry.name
    except FileNotFoundError:
        return


def _lstat_mode(path: str) -> int | None:
    try:
        return os.lstat(path).st_mode
    except FileNotFoundError:
        return None


def _make_dirs(path: str) -> None:
    """``mkdir -p`` with mode 0700 at every level it creates."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    if parent != path:
        _make_dirs(parent)
    try:
        os.mkdir(path, _DIR_MODE)
    except FileExistsError:
        if not os.path.isdir(path):
            raise


def _remove_quietly(path: str, strict: bool = False) -> None:
    """Unlink, ignoring a missing file (and, unless ``strict``, any error)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        if strict:
            raise


# -- the Twisted side -------------------------------------------------------------


@implementer(IMaildrop)
class MaildirMaildrop(LockedMaildrop):
    """One session's locked snapshot of a maildir."""

    def __init__(
        self,
        maildir: Maildir | None,
        snapshot: Snapshot,
        lock: IMaildropLock | None,
        run_blocking: RunBlocking,
    ) -> None:
        super().__init__(lock)
        self._maildir = maildir
        self._snapshot = snapshot
        self._moved: dict[str, str] = {}  # uid -> relative path, found again (shared snapshot)
        self._run = run_blocking

    def listing(self) -> MessageList:
        return self._snapshot.listing

    def _map_now(self) -> dict[str, str] | None:
        """uid -> entry, if it is made or quick enough to make on the
        reactor thread; None while a long one is still to make."""
        snapshot = self._snapshot
        if snapshot.mapped or len(snapshot.listing) <= _MAP_INLINE:
            return snapshot.where()
        return None

    async def _relative(self, uid: str) -> str | None:
        moved = self._moved.get(uid)
        if moved is not None:
            return moved
        where = self._map_now()
        if where is None:  # once per loaded listing, and too long for the reactor thread
            where = await self._run(self._snapshot.where)
        entry = where.get(uid)
        return None if entry is None else relative_path(entry)

    def open_message(self, uid: str) -> defer.Deferred[BinaryIO]:
        self.check_open()
        opened = self._open_where_listed(uid)
        if opened is not None:
            return defer.succeed(opened)
        return defer.Deferred.fromCoroutine(self._open_message(uid))

    def _open_where_listed(self, uid: str) -> BinaryIO | None:
        """The usual RETR, with no coroutine (a Deferred made from one costs
        more than opening the file): the file is where the listing says,
        and the uid map is made or quick to make.  None for anything else
        (a message renamed or moved, a long map still to make, an error),
        which :meth:`_open_message` handles."""
        where = self._map_now()
        if self._maildir is None or uid in self._moved or where is None:
            return None
        entry = where.get(uid)
        if entry is None:
            return None
        try:
            return self._maildir.open_message(relative_path(entry))
        except OSError:
            return None

    async def _open_message(self, uid: str) -> BinaryIO:
        relative = await self._relative(uid)
        if relative is None or self._maildir is None:
            raise NoSuchMessage()
        try:
            try:
                return self._maildir.open_message(relative)
            except FileNotFoundError:
                pass
            moved = await self._run(self._maildir.find, relative)
            if moved is None:
                raise MessageVanished()
            self._moved[uid] = moved
            return self._maildir.open_message(moved)
        except FileNotFoundError:
            raise MessageVanished() from None
        except OSError as e:
            raise _temporary(e, "open a message") from e

    async def apply_deletions(self, deleted: list[str]) -> None:
        assert self._maildir is not None  # an empty snapshot has no uids
        relatives = []
        for uid in deleted:
            relative = await self._relative(uid)
            assert relative is not None  # commit() checked the uids
            relatives.append(relative)
        try:
            await self._run(self._maildir.delete, relatives)
        except OSError as e:
            raise _temporary(e, "commit deletions") from e


def _temporary(error: OSError, doing: str) -> TemporaryFailure:
    log.error("maildir: cannot {doing}: {error}", doing=doing, error=error)
    return TemporaryFailure()


@implementer(IMaildropStore)
class MaildirStore:
    """Maildirs at a path template, e.g. ``/var/mail/%d/%n/Maildir``.

    ``create``: make a missing maildir (0700) at first login, as Dovecot
    does, instead of showing an empty maildrop without creating anything.
    The directories belong to the user popframe runs as.

    An open does its few stat calls on the reactor thread and hands work to
    ``run_blocking`` only when there is some (a journal to finish, mail to
    move, a listing to make or check): a thread hand-off costs the reactor
    more than those calls.
    """

    def __init__(
        self,
        template: str | PathTemplate,
        locker: IMaildropLocker | None = None,
        *,
        create: bool = True,
        run_blocking: RunBlocking = deferToThread,
    ) -> None:
        self.template = template if isinstance(template, PathTemplate) else PathTemplate(template)
        self.locker = locker if locker is not None else FileLocker()
        self.create = create
        self._run = run_blocking

    def open(self, user: str, settings: UserSettings | None = None) -> defer.Deferred[IMaildrop]:
        """The usual open (the lock granted at once, the remembered listing
        still right) fires before it returns, with no coroutine and no
        thread; anything else continues in :meth:`_open_locked`."""
        try:
            maildir = self._prepare(user)
        except UnsafeUserName as e:
            log.warn("refusing user name {user!r}: {reason}", user=user, reason=e.reason)
            return defer.fail()
        except OSError as e:
            return defer.fail(_temporary(e, "prepare maildir"))
        except Exception:
            return defer.fail()
        if maildir is None:
            return defer.succeed(MaildirMaildrop(None, Snapshot(MessageList([], [], b""), []),
                                                 None, self._run))
        locked = self.locker.acquire(maildir.lock_path)
        granted: list[IMaildropLock] = []

        def grant(lock: IMaildropLock) -> IMaildropLock:
            granted.append(lock)
            return lock

        locked.addCallback(grant)  # runs now if the lock was granted at once
        if granted:
            snapshot = maildir.load_unchanged()
            if snapshot is not None:
                return defer.succeed(MaildirMaildrop(maildir, snapshot, granted[0], self._run))
        return defer.Deferred.fromCoroutine(self._open_locked(maildir, locked))

    async def _open_locked(
        self, maildir: Maildir, locked: defer.Deferred[IMaildropLock]
    ) -> IMaildrop:
        lock = await locked
        try:
            snapshot = maildir.load_unchanged()
            if snapshot is None:
                snapshot = await self._run(maildir.load)
        except BaseException as e:
            await lock.release()
            if isinstance(e, OSError):
                raise _temporary(e, "list maildir") from e
            raise
        return MaildirMaildrop(maildir, snapshot, lock, self._run)

    def _prepare(self, user: str) -> Maildir | None:
        maildir = Maildir(self.template.resolve(user))
        return maildir if maildir.prepare(self.create) else None


@implementer(IMaildropStoreFactory)
class MaildirStoreFactory:
    storeName = "maildir"
    argStringFormat = "maildir:/var/mail/%u/Maildir[:create=no]"
    storeHelp = """\
Maildirs as Postfix, Dovecot and Courier write them, at a path template:
%u the user name, %n its local part (before @), %d its domain, %% a
literal %; %Lu, %Ln, %Ld lower-case.  A missing maildir is created (0700)
at first login unless create=no.  Sessions lock each other out with flock
on popframe.lock in the maildir, which serves one host.
"""

    def storeFromString(self, argstring: str) -> IMaildropStore:
        template, *options = argstring.split(":")
        if not template:
            raise ConfigurationError(
                "--store", f"maildir needs a path template, e.g. {self.argStringFormat}"
            )
        create = True
        for option in options:
            key, _, value = option.partition("=")
            if key != "create" or value not in ("yes", "no"):
                raise ConfigurationError(
                    "--store", f"maildir: unknown option {option!r} (known: create=yes|no)"
                )
            create = value == "yes"
        return MaildirStore(template, create=create)

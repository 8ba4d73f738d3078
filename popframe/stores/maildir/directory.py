"""One maildir on disk, and the blocking work on it: prepare it, finish
an interrupted commit, move ``new/`` to ``cur/``, and list ``cur/`` oldest
first, reusing, updating or building the listing (see :meth:`Maildir.load`);
find a message another agent renamed; delete all or none.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import time
from bisect import bisect_left
from collections.abc import Callable
from operator import itemgetter
from typing import BinaryIO

from twisted.logger import Logger

from popframe.files import write_file_atomically
from popframe.interfaces import MessageList
from popframe.stores.maildir.collector import collector_paused
from popframe.stores.maildir.files import (
    file_wire_form,
    lstat_mode,
    make_dirs,
    open_regular,
    regular_files,
    remove_quietly,
)
from popframe.stores.maildir.hiding import flag_letter, is_hidden
from popframe.stores.maildir.journal import (
    JOURNAL_NAME,
    delete_all,
    finish_interrupted,
    hide_all,
)
from popframe.stores.maildir.listing import (
    LISTING_NAME,
    Snapshot,
    StoredListing,
    check_listing,
    format_listing,
    is_older_listing,
    key_text,
    parse_listing,
    rekeyed,
    same_names,
)
from popframe.stores.maildir.names import (
    any_digest_uid,
    base_name,
    cur_order,
    delivery_order,
    digest_uid,
    is_digest_uid,
    size_from_name,
    uid_for,
)
from popframe.stores.maildir.remembered import LISTINGS, Known
from popframe.stores.maildir.sizes import SIZES_NAME, Form, format_sizes, parse_sizes
from popframe.stores.maildir.uidls import X_UIDL_CACHE

#: The store's one log namespace, whichever of its files logs.
log = Logger(namespace="popframe.stores.maildir")

LOCK_NAME = "popframe.lock"
#: EXPIRE: when each uid was retrieved (popframe.stores.uidstate).
RETRIEVED_NAME = "popframe.retrieved"
#: Temporary files of a write_file_atomically a crash interrupted.
_TEMPORARY_PREFIXES = tuple(
    f".{name}." for name in (JOURNAL_NAME, SIZES_NAME, LISTING_NAME, RETRIEVED_NAME, X_UIDL_CACHE))

_SETTLED_NS = 1_000_000_000
#: Shorter listings are not stored: making one again costs about what
#: storing and loading it would (20 messages: made in 60 us, stored in 200).
_STORE_MIN = 256
#: A listing whose ``cur/`` names changed by at most this many names (added
#: plus removed), or by a tenth of the listing if that is more, is updated
#: rather than made again (see Maildir._update).
_UPDATE_MIN = 16
_UPDATE_FRACTION = 10

#: Messages moved from ``new/`` to ``cur/`` per open, at most (see
#: Maildir._move_new): the rest of a huge ``new/`` waits for later opens.
MOVE_BATCH = 2000

#: A message being listed: (sort key, base, relative path, entry, size, ready).
_Row = tuple[str, str, str, str, int, bool]


class Maildir:
    """Blocking operations on one maildir; run them off the reactor thread,
    except :meth:`prepare` and :meth:`load_unchanged`, which are a few stat
    calls when nothing needs doing.
    """

    def __init__(self, path: str, hide: bool = False) -> None:
        self.path = path
        self.lock_path = os.path.join(path, LOCK_NAME)
        # dele=hide: deletions flag the files, which listings leave out.
        self.hide = hide
        # What the last load left in new/ beyond MOVE_BATCH, oldest first:
        # a session moves them meanwhile (move_rest).
        self.unmoved: list[str] = []

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
            make_dirs(self.path)
            for sub in ("cur", "new", "tmp"):
                make_dirs(self._at(sub))
        elif not os.path.isdir(self.path):
            return False
        for sub in ("cur", "new"):
            mode = lstat_mode(self._at(sub))
            if mode is not None and not stat.S_ISDIR(mode):
                raise OSError(errno.ENOTDIR, "not a real directory", self._at(sub))
        return True

    def _complete(self, create: bool) -> bool:
        """The usual case in two or three lstat calls: ``cur/`` and ``new/``
        (and ``tmp/`` when we would make it) are real directories."""
        for sub in ("cur", "new", "tmp") if create else ("cur", "new"):
            mode = lstat_mode(self._at(sub))
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
        known = LISTINGS.recall(self.path)
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
        self._remove_temporaries()
        hidden = finish_interrupted(self.path)
        leftover = self._move_new()
        if hidden or leftover:  # rare: list from scratch, remember nothing
            found = [(name, "cur/" + name) for name in self._cur_names()]
            found += [(name, "new/" + name) for name in leftover]
            return self._snapshot(found, hidden)
        key = self._directories_key()
        known = LISTINGS.recall(self.path)
        if known is not None and key is not None and known.key == key:
            return known.snapshot
        stored = self._read_listing()
        if stored is not None and key is not None and stored.key == key_text(key):
            snapshot = self._parse_listing(stored, None)  # the key vouches: no readdir
            if snapshot is not None:
                LISTINGS.remember(self.path, Known(snapshot, None, key))
                return snapshot
            stored = None  # not intact (logged)
        names = self._cur_names()
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
        LISTINGS.remember(self.path, Known(snapshot, names, settled))
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
                remove_quietly(self._at(LISTING_NAME))
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
        self, known: Known | None, stored: StoredListing | None, names: list[str]
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
        if len(uids) != len(entries) or any_digest_uid(uids):
            return None
        doomed = _positions(entries, removed)
        if doomed is None:
            return None
        taken = set(uids).difference(uids[i] for i in doomed)
        bases = {base_name(name) for name in added}
        if len(bases) != len(added) or not bases.isdisjoint(taken):
            return None
        if not all(uid_for(b) == b and not is_digest_uid(b) for b in bases):
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
        if key is None or not same_names(self._cur_names(), names):
            return None
        return key if key == self._directories_key() else None

    def _cur_names(self) -> list[str]:
        """The names in ``cur/`` POP3 lists: with ``hide``, not those
        carrying the ``$POP3Deleted`` flag letter."""
        names = list(regular_files(self._at("cur")))
        letter = flag_letter(self.path) if self.hide else None
        if letter is None:
            return names
        return [name for name in names if not is_hidden(name, letter)]

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

    def _remove_temporaries(self) -> None:
        """Remove the temporary files of a write_file_atomically a crash
        interrupted (the journal's, the caches')."""
        for name in os.listdir(self.path):
            if name.startswith(_TEMPORARY_PREFIXES) and name.endswith(".tmp"):
                remove_quietly(self._at(name))

    def _move_new(self) -> list[str]:
        """Move ``new/`` to ``cur/``; return the names that stayed behind
        (read-only maildir, or a name already taken in ``cur/``).
        """
        stayed: list[str] = []
        fresh = list(regular_files(self._at("new")))
        if not fresh:
            return stayed
        if len(fresh) > MOVE_BATCH and not self._sized_before(fresh):
            # A big first open (a migrated or long-unread maildrop): a
            # rename is as dear as sizing a message, so at most MOVE_BATCH
            # move per open; the rest are listed where they are, sized
            # once into popframe.sizes, and moved by the session meanwhile
            # (move_rest) or by the next open: there the sizes are known,
            # renames are all that is left, and all of new/ moves at once
            # (until it does, every open lists from scratch).
            fresh.sort(key=delivery_order)
            stayed, fresh = fresh[MOVE_BATCH:], fresh[:MOVE_BATCH]
            self.unmoved = list(stayed)
        # One readdir of cur/ rather than an lstat per message (a first open
        # of 100,000 Postfix-delivered messages spent a tenth of its time
        # there), and paths made by concatenation rather than os.path.join.
        taken = set(regular_files(self._at("cur"))) if len(fresh) > 16 else None
        new, cur = self._at("new"), self._at("cur")
        for name in fresh:
            target = name if ":" in name else name + ":2,"
            try:
                if target in taken if taken is not None else os.path.lexists(f"{cur}/{target}"):
                    raise FileExistsError(errno.EEXIST, "name taken", target)
                os.rename(f"{new}/{name}", f"{cur}/{target}")
            except FileNotFoundError:
                pass  # another agent moved or deleted it: cur/ shows it
            except OSError as e:
                log.warn("cannot move {name} to cur/: {error}", name=f"{new}/{name}", error=e)
                stayed.append(name)
        return stayed

    def _sized_before(self, fresh: list[str], sample: int = 64) -> bool:
        """Whether an earlier open already sized (most of) ``fresh``: a
        sample of the names, found in ``popframe.sizes``."""
        cache = self._read_sizes()
        if not cache:
            return False
        step = max(1, len(fresh) // sample)
        picked = fresh[::step]
        return sum(base_name(name) in cache for name in picked) * 10 >= len(picked) * 9

    def move_rest(self, names: list[str], stop: threading.Event,
                  moved: dict[str, str]) -> None:
        """Blocking, while a session holds the lock: move ``names`` (a big
        ``new/`` that :meth:`load` left) to ``cur/`` one by one until
        ``stop`` is set, noting each in ``moved`` (uid → its ``cur/`` path)
        so the session finds it without a search."""
        taken = set(regular_files(self._at("cur")))
        new, cur = self._at("new"), self._at("cur")
        for name in names:
            if stop.is_set():
                return
            target = name + ":2,"
            if target in taken:
                continue
            try:
                os.rename(f"{new}/{name}", f"{cur}/{target}")
            except OSError:
                continue  # moved or removed by another agent; listed as it was
            moved[uid_for(name)] = "cur/" + target

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
                    found_form = file_wire_form(f"{self.path}/{relative}")
                except FileNotFoundError:
                    continue  # deleted by another agent meanwhile
                form = computed[base] = (found_form.size, found_form.ready)
            entry = name if relative.startswith("cur/") else relative
            rows.append((delivery_order(base) + "\0" + relative, base, relative, entry, *form))
        return rows, cached, computed

    # -- the caches in the maildir root ---------------------------------------

    def _read_sizes(self) -> dict[str, Form]:
        data = self._read_cache(SIZES_NAME, "size cache")
        if not data:
            return {}
        try:
            return parse_sizes(data)
        except ValueError as e:
            log.warn("ignoring size cache {path}: {error}", path=self._at(SIZES_NAME), error=e)
            return {}

    def _write_sizes(self, forms: dict[str, Form]) -> None:
        self._write_cache(SIZES_NAME, "size cache", format_sizes(forms))

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
        """Replace a cache file atomically; without fsync, since a cache
        lost in a crash is only made again."""
        try:
            write_file_atomically(self._at(name), data, durable=False)
        except OSError as e:
            log.warn("cannot write {what} {path}: {error}", what=what, path=self._at(name), error=e)

    # -- the persisted listing (its format: listing.py) ---------------------------

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
        for name in regular_files(self._at("cur")):
            if base_name(name) == base:
                return "cur/" + name
        if os.path.lexists(self._at(relative)):
            return relative
        return None

    def open_message(self, relative: str) -> BinaryIO:
        return open_regular(self._at(relative))

    # -- commit -------------------------------------------------------------------

    def delete(self, relatives: list[str], fence: Callable[[], None] | None = None) -> None:
        """Delete (or with ``hide``, flag) all or none (see
        :mod:`~popframe.stores.maildir.journal`), checking a lease's
        ``fence`` first."""
        if self.hide:
            hide_all(self.path, relatives, flag_letter(self.path, create=True) or "", fence)
        else:
            delete_all(self.path, relatives, fence)


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

"""Maildir, as Postfix, Dovecot and Courier write it.

A session sees a snapshot: at open, under the lock, mail in ``new/`` moves
to ``cur/`` (adding ``:2,``, as an MUA that has seen it would), then ``cur/``
is listed oldest first.  Mail delivered later is neither listed nor
deleted.  Other agents (an IMAP server, a MUA) ignore our lock, so a listed
file may be renamed (new flags) or deleted under us: files are found again
by their base name, and a file that is gone is no error at commit.

Files popframe keeps in the maildir root (Dovecot ignores them):

- ``popframe.lock``: the flock target; never removed.
- ``popframe.sizes``: a cache of computed RETR sizes by base name, so the
  next open of a large maildrop reads no message.  Only a cache: losing or
  corrupting it costs one re-read.
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
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
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
    MessageInfo,
)
from popframe.protocol.encoding import wire_size
from popframe.stores import LockedMaildrop, RunBlocking
from popframe.stores.locking import FileLocker
from popframe.stores.template import PathTemplate, UnsafeUserName

log = Logger()

LOCK_NAME = "popframe.lock"
SIZES_NAME = "popframe.sizes"
JOURNAL_NAME = "popframe.journal"
_JOURNAL_VERSION = 1
_DIR_MODE = 0o700
_CHUNK = 1 << 16
_UID_MAX = 70

#: Maildir's info part starts at ':'; systems that cannot have ':' in file
#: names use ';' or '!' instead.
_OTHER_INFO = re.compile(r"[;!]2,[A-Za-z]*$")
_VIRTUAL_SIZE = re.compile(r",W=(\d+)")
_SIZES_HEADER = "popframe-sizes 1"

#: Listings of recently opened maildirs, by path (see Maildir.load).
_LISTINGS: OrderedDict[str, tuple[tuple[int, ...], "Snapshot"]] = OrderedDict()
_LISTINGS_KEPT = 64
_SETTLED_NS = 1_000_000_000


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
    if 0 < len(base) <= _UID_MAX and base.isascii() and base.isprintable() and " " not in base:
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


def file_wire_size(path: str) -> int:
    with open_regular(path) as f:
        return wire_size(iter(lambda: f.read(_CHUNK), b""))


# -- the directory ------------------------------------------------------------


@dataclass(slots=True)
class Snapshot:
    """A maildrop as listed at open: the listing and where each uid lives."""

    listing: list[MessageInfo]
    names: dict[str, str]  # uid -> "cur/<file name>"


class Maildir:
    """Blocking operations on one maildir; run them off the reactor thread."""

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

    def load(self) -> Snapshot:
        """Finish an interrupted commit, move new mail to ``cur/``, list.

        A listing is reused while ``cur/`` and ``new/`` are unchanged
        (same inode and ctime), but only once their ctime is a second
        old: any change after that gives a newer ctime, so a reused
        listing can never miss a change (coarse clocks included).
        """
        hidden = self.recover()
        leftover = self._move_new()
        key = self._directories_key()
        if not hidden and not leftover and key is not None:
            cached = _LISTINGS.get(self.path)
            if cached is not None and cached[0] == key:
                _LISTINGS.move_to_end(self.path)
                return Snapshot(cached[1].listing, dict(cached[1].names))
        found = [(name, "cur/" + name) for name in _regular_files(self._at("cur"))]
        found += [(name, "new/" + name) for name in leftover]
        snapshot = self._snapshot(found, hidden)
        if not hidden and not leftover and key is not None and key == self._directories_key():
            _LISTINGS[self.path] = (key, Snapshot(snapshot.listing, dict(snapshot.names)))
            while len(_LISTINGS) > _LISTINGS_KEPT:
                _LISTINGS.popitem(last=False)
        return snapshot

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
        """List ``found`` (name, relative path) oldest first.  This loop runs
        once per message at every open, so it sticks to C-level string
        methods and looks sizes up rather than reading files.
        """
        cache = self._read_sizes()
        computed: dict[str, int] = {}
        cached: list[str] = []
        rows: list[tuple[str, str, str, int]] = []  # (sort key, base, relative, size)
        for name, relative in found:
            base, info, _ = name.partition(":")
            if not info:
                base = base_name(name)
            if base in hidden:
                continue
            size = size_from_name(base) if ",W=" in base else None
            if size is None:
                size = cache.get(base)
                if size is None:
                    try:
                        size = computed[base] = file_wire_size(self._at(relative))
                    except FileNotFoundError:
                        continue  # deleted by another agent meanwhile
                else:
                    cached.append(base)
            rows.append((delivery_order(base) + "\0" + relative, base, relative, size))
        if computed or len(cached) != len(cache):
            self._write_sizes({**{b: cache[b] for b in cached}, **computed})
        rows.sort(key=itemgetter(0))
        listing = []
        names: dict[str, str] = {}
        for _, base, relative, size in rows:
            uid = uid_for(base)
            if uid in names:  # the same base twice, e.g. a copied file
                uid = digest_uid(relative)
            names[uid] = relative
            listing.append(MessageInfo(uid, size))
        return Snapshot(listing, names)

    # -- the size cache -------------------------------------------------------
    #
    # "popframe-sizes 1\n", the base names joined by LF, NUL, the sizes
    # joined by ",": parsed by a few C-level splits, no per-line Python.

    def _read_sizes(self) -> dict[str, int]:
        try:
            with open(self._at(SIZES_NAME), "rb") as f:
                data = os.fsdecode(f.read())
        except FileNotFoundError:
            return {}
        except OSError as e:
            log.warn("cannot read size cache {path}: {error}", path=self._at(SIZES_NAME), error=e)
            return {}
        header, _, body = data.partition("\n")
        names, _, sizes = body.partition("\0")
        try:
            if header != _SIZES_HEADER:
                raise ValueError("unknown format")
            if not names:
                return {}
            numbers = list(map(int, sizes.split(",")))
            if min(numbers) < 0:
                raise ValueError("negative size")
            return dict(zip(names.split("\n"), numbers, strict=True))
        except ValueError as e:
            log.warn("ignoring size cache {path}: {error}", path=self._at(SIZES_NAME), error=e)
            return {}

    def _write_sizes(self, sizes: dict[str, int]) -> None:
        """Replace the cache atomically; without fsync, since a cache lost
        in a crash is only recomputed.
        """
        usable = {b: n for b, n in sizes.items() if "\n" not in b}
        names = "\n".join(usable)
        numbers = ",".join(map(str, usable.values()))
        data = f"{_SIZES_HEADER}\n{names}\0{numbers}"
        try:
            write_file_atomically(self._at(SIZES_NAME), os.fsencode(data), durable=False)
        except OSError as e:
            log.warn("cannot write size cache {path}: {error}", path=self._at(SIZES_NAME), error=e)

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
            if name.startswith((f".{JOURNAL_NAME}.", f".{SIZES_NAME}.")) and name.endswith(".tmp"):
                _remove_quietly(self._at(name))
        try:
            with open(self._at(JOURNAL_NAME), "rb") as f:
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
        self._run = run_blocking

    def listing(self) -> list[MessageInfo]:
        return self._snapshot.listing

    def open_message(self, uid: str) -> defer.Deferred[BinaryIO]:
        self._check_open()
        return defer.Deferred.fromCoroutine(self._open_message(uid))

    async def _open_message(self, uid: str) -> BinaryIO:
        relative = self._snapshot.names.get(uid)
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
            self._snapshot.names[uid] = moved
            return self._maildir.open_message(moved)
        except FileNotFoundError:
            raise MessageVanished() from None
        except OSError as e:
            raise _temporary(e, "open a message") from e

    async def _delete(self, deleted: list[str]) -> None:
        assert self._maildir is not None  # an empty snapshot has no uids
        relatives = [self._snapshot.names[uid] for uid in deleted]
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

    def open(self, user: str) -> defer.Deferred[IMaildrop]:
        return defer.Deferred.fromCoroutine(self._open(user))

    async def _open(self, user: str) -> IMaildrop:
        try:
            self.template.expand(user)  # refuse at once, without a thread
            maildir = await self._run(self._prepare, user)
        except UnsafeUserName as e:
            log.warn("refusing user name {user!r}: {reason}", user=user, reason=e.reason)
            raise
        except OSError as e:
            raise _temporary(e, "prepare maildir") from e
        if maildir is None:
            return MaildirMaildrop(None, Snapshot([], {}), None, self._run)
        lock = await self.locker.acquire(maildir.lock_path)
        try:
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

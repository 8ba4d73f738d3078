"""The Maildir store as popframe sees it: :class:`MaildirStore` opens a
locked snapshot of a user's maildir, :class:`MaildirMaildrop` serves it to
one session, and :class:`MaildirStoreFactory` is the
``--store=maildir:TEMPLATE[:create=no]`` plugin.  The blocking work is
:class:`~popframe.stores.maildir.directory.Maildir`'s.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import BinaryIO

from twisted.internet import defer
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from popframe.config import ConfigurationError
from popframe.errors import NoSuchMessage, TemporaryFailure
from popframe.interfaces import (
    IDeliverableStore,
    IExpiringMaildrop,
    IFencedLock,
    IImportingStore,
    IListableStore,
    IMaildrop,
    IMaildropLock,
    IMaildropLocker,
    IMaildropStore,
    IMaildropStoreFactory,
    IMessageBody,
    MessageList,
    UserSettings,
)
from popframe.stores import RunBlocking
from popframe.stores.base import LockedMaildrop
from popframe.stores.leases import LOCK_DEFAULTS, LOCK_OPTIONS, locker_from_options, split_lock_url
from popframe.stores.location import (
    HomeTemplate,
    WrongMaildrop,
    check_owner,
    maildrop_path,
    store_template,
    template_users,
)
from popframe.stores.locking import FileLocker
from popframe.stores.maildir.delivery import MaildirMissing, deliver_message
from popframe.stores.maildir.directory import RETRIEVED_NAME, Maildir
from popframe.stores.maildir.listing import Snapshot, relative_path
from popframe.stores.maildir.names import maildir_name_keeps
from popframe.stores.maildir.uidls import UidlFormat, parse_uidl_format
from popframe.stores.options import DELE_DEFAULT, DELE_OPTION, choice, parse_store_options
from popframe.stores.template import PathTemplate, UnsafeUserName
from popframe.stores.uidstate import date_retrievals, retrieved_before

#: The store's one log namespace, whichever of its files logs.
log = Logger(namespace="popframe.stores.maildir")

#: Listings up to this long map uids to files on the reactor thread (a
#: fraction of a millisecond); longer ones in a thread.
_MAP_INLINE = 2000


class MessageVanished(TemporaryFailure):
    """Another client removed the message during this session.

    Not ``NoSuchMessage``: that is the client's fault and counts towards its
    bad-command limit.  A reconnect lists the maildrop as it now is, so
    "try again later" is the honest answer.
    """

    default_message = "message was removed by another client, please reconnect"


@implementer(IExpiringMaildrop)
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
        # A big new/ that the open left: moved to cur/ during the session
        # (Maildir.move_rest, which fills _moved), stopped when it ends.
        self._stop = threading.Event()
        self._mover: defer.Deferred[None] | None = None
        if maildir is not None and maildir.unmoved:
            unmoved, maildir.unmoved = maildir.unmoved, []
            self._mover = run_blocking(maildir.move_rest, unmoved, self._stop, self._moved)
            self._mover.addErrback(lambda failure: log.failure("moving new/ failed", failure))

    def _stop_mover(self) -> defer.Deferred[None]:
        """Stop moving new/ (after the rename under way) and fire then."""
        mover, self._mover = self._mover, None
        if mover is None:
            return defer.succeed(None)
        self._stop.set()
        return mover

    def _release(self) -> defer.Deferred[None]:
        if self._mover is None:
            return super()._release()
        return self._stop_mover().addBoth(lambda _: LockedMaildrop._release(self))

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

    def open_message(self, uid: str) -> defer.Deferred[BinaryIO | IMessageBody]:
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

    def record_retrieved(self, uids: Sequence[str], when: float) -> defer.Deferred[None]:
        """EXPIRE: dates in ``popframe.retrieved`` (a uid map in the root)."""
        if self._maildir is None or not uids:
            return defer.succeed(None)
        path = os.path.join(self._maildir.path, RETRIEVED_NAME)
        listed = set(self._snapshot.listing.uids)
        return self._run(date_retrievals, path, listed, list(uids), when)

    def retrieved_before(self, cutoff: float) -> defer.Deferred[list[str]]:
        if self._maildir is None:
            return defer.succeed([])
        path = os.path.join(self._maildir.path, RETRIEVED_NAME)
        return self._run(retrieved_before, path, list(self._snapshot.listing.uids), cutoff)

    async def apply_deletions(self, deleted: list[str]) -> None:
        assert self._maildir is not None  # an empty snapshot has no uids
        await self._stop_mover()  # no rename under the unlinks
        relatives = []
        for uid in deleted:
            relative = await self._relative(uid)
            assert relative is not None  # commit() checked the uids
            relatives.append(relative)
        # A lease (shared storage) is checked right before deleting.
        fence = self._lock.fence if IFencedLock.providedBy(self._lock) else None
        try:
            await self._run(self._maildir.delete, relatives, fence)
        except OSError as e:
            raise _temporary(e, "commit deletions") from e


def _temporary(error: OSError, doing: str) -> TemporaryFailure:
    log.error("maildir: cannot {doing}: {error}", doing=doing, error=error)
    return TemporaryFailure()


@implementer(IDeliverableStore, IImportingStore, IListableStore)
class MaildirStore:
    """Maildirs at a path template, e.g. ``/var/mail/%d/%n/Maildir``.

    ``create``: make a missing maildir (0700) at first login, as Dovecot
    does, instead of showing an empty maildrop without creating anything.
    The directories belong to the user popframe runs as.  ``uidl``: whose
    UIDLs to serve (:mod:`~popframe.stores.maildir.uidls`; the default,
    ``popframe``, maps nothing).

    An open does its few stat calls on the reactor thread and hands work to
    ``run_blocking`` only when there is some (a journal to finish, mail to
    move, a listing to make or check): a thread hand-off costs the reactor
    more than those calls.
    """

    def __init__(
        self,
        template: str | PathTemplate | HomeTemplate,
        locker: IMaildropLocker | None = None,
        *,
        create: bool = True,
        dele: str = "unlink",
        uidl: str = "popframe",
        run_blocking: RunBlocking = deferToThread,
    ) -> None:
        self.template = store_template(template)
        self.locker = locker if locker is not None else FileLocker()
        self.create = create
        # "hide": DELE flags the file $POP3Deleted (popframe.stores.maildir.hiding).
        self.dele = dele
        self.uidl = None if uidl == "popframe" else UidlFormat(uidl)
        self._run = run_blocking

    def open(self, user: str, settings: UserSettings | None = None) -> defer.Deferred[IMaildrop]:
        """The usual open (the lock granted at once, the remembered listing
        still right) fires before it returns, with no coroutine and no
        thread; anything else continues in :meth:`_open_locked`."""
        try:
            maildir = self._prepare(user, settings)
        except WrongMaildrop:
            return defer.fail()
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
            if snapshot is not None and self.uidl is not None:
                snapshot = self.uidl.remembered(maildir.path, snapshot)
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
            if self.uidl is not None:
                snapshot = await self._run(self.uidl.apply, maildir.path, snapshot)
        except BaseException as e:
            await lock.release()
            if isinstance(e, OSError):
                raise _temporary(e, "list maildir") from e
            raise
        return MaildirMaildrop(maildir, snapshot, lock, self._run)

    def deliver(self, user: str, message: BinaryIO,
                settings: UserSettings | None = None) -> defer.Deferred[None]:
        """:class:`~popframe.interfaces.IDeliverableStore`: into ``new/``
        (see :mod:`~popframe.stores.maildir.delivery`), whether or not a
        session holds the maildrop; a missing maildir is created unless
        ``create`` is off, when delivery is deferred."""
        try:
            path = maildrop_path(self.template, user, settings, "maildir")
        except WrongMaildrop:
            return defer.fail()
        except UnsafeUserName as e:
            log.warn("refusing user name {user!r}: {reason}", user=user, reason=e.reason)
            return defer.fail()
        except OSError as e:
            return defer.fail(_temporary(e, "find maildir"))

        def failed(failure: Failure) -> Failure:
            if failure.check(MaildirMissing):
                log.warn("no maildir {path}: deferring delivery (create=no)", path=path)
                return Failure(TemporaryFailure())
            if isinstance(failure.value, OSError):
                return Failure(_temporary(failure.value, "deliver"))
            return failure

        d: defer.Deferred[str] = self._run(deliver_message, path, message, self.create)
        return d.addCallbacks(lambda name: None, failed)

    def users(self) -> defer.Deferred[list[str]]:
        """:class:`~popframe.interfaces.IListableStore`: the users whose
        maildirs exist at the template's paths."""
        return self._run(template_users, self.template)

    def add_message(self, user: str, message: BinaryIO, uid: str) -> defer.Deferred[None]:
        """:class:`~popframe.interfaces.IImportingStore`: delivered under the
        name ``uid``, which the listing gives as its UIDL.  ValueError for a
        uid that cannot be a maildir name and its own UIDL (a ``/`` or
        ``:``, a leading dot, a digest's form), or when ``uidl=`` serves
        other UIDLs than the names."""
        try:
            self.check_uid(uid)
        except ValueError:
            return defer.fail()
        try:
            path = self.template.resolve(user)
        except UnsafeUserName as e:
            log.warn("refusing user name {user!r}: {reason}", user=user, reason=e.reason)
            return defer.fail()
        def failed(failure: Failure) -> Failure:
            if failure.check(FileExistsError):
                return Failure(ValueError(f"{uid!r}: the maildir has a file of that name"))
            if failure.check(MaildirMissing):
                return Failure(ValueError(f"no maildir {path} (create=no)"))
            if isinstance(failure.value, OSError):
                return Failure(_temporary(failure.value, "add a message"))
            return failure

        d: defer.Deferred[str] = self._run(deliver_message, path, message, self.create, uid)
        return d.addCallbacks(lambda name: None, failed)

    def check_uid(self, uid: str) -> None:
        if self.uidl is not None and self.uidl.name != "maildir":
            raise ValueError(f"a maildir store with uidl={self.uidl.spec} serves other UIDLs "
                             "than its file names")
        if not maildir_name_keeps(uid):
            raise ValueError(f"{uid!r} cannot be a maildir file name and its UIDL "
                             "(sql: and mbox: stores keep any UIDL)")

    def stored_size(self, uid: str, size: int) -> int:
        return size

    def _prepare(self, user: str, settings: UserSettings | None = None) -> Maildir | None:
        path = maildrop_path(self.template, user, settings, "maildir")
        maildir = Maildir(path, hide=self.dele == "hide")
        if not maildir.prepare(self.create):
            return None
        check_owner(path, settings, user)
        return maildir


@implementer(IMaildropStoreFactory)
class MaildirStoreFactory:
    storeName = "maildir"
    argStringFormat = ("maildir:/var/mail/%u/Maildir[:create=no][:dele=hide][:uidl=FORMAT]"
                       "[:lock=redis|postgresql[:lock_ttl=S]:lock_url=URL]")
    storeHelp = """\
Maildirs as Postfix, Dovecot and Courier write them, at a path template:
%u the user name, %n its local part (before @), %d its domain, %% a
literal %; %Lu, %Ln, %Ld lower-case; or ~/PATH under each user's home
(the passwd-file's home column or userdb_home, as Dovecot's
mail_location = maildir:~/Maildir).  A missing maildir is created (0700)
at first login unless create=no.  Sessions lock each other out with flock
on popframe.lock in the maildir, which serves one host; for maildirs that
several hosts share (NFS), lock=redis or lock=postgresql takes a lease
with fencing there instead (lock_ttl=30 seconds; lock_prefix= for Redis
keys), at lock_url=URL, which must come last (docs/scaling.md).
dele=hide: DELE keeps the file and hides it from POP3 with the keyword
$POP3Deleted (a flag letter, as Dovecot's pop3_deleted_flag); dele=unlink
(the default) removes it.  uidl= serves the UIDLs another server gave
(docs/migration.md): popframe (default), dovecot (dovecot-uidlist, else
pop3_uidl_format %08Xu%08Xv; dovecot:TEMPLATE for another), courier
(courierpop3dsizelist), maildir (the name up to ':', as qmail and
tpop3d), x-uidl (an X-UIDL header).
"""

    def storeFromString(self, argstring: str) -> IMaildropStore:
        argstring, lock_url = split_lock_url(argstring)
        template, *options = argstring.split(":")
        if not template:
            raise ConfigurationError(
                "--store", f"maildir needs a path template, e.g. {self.argStringFormat}"
            )
        values = parse_store_options(
            "maildir", _joined_values(options),
            {"create": choice("yes", "no"), "uidl": parse_uidl_format, **DELE_OPTION,
             **LOCK_OPTIONS},
            {"create": "yes", "uidl": "popframe", **DELE_DEFAULT, **LOCK_DEFAULTS})
        return MaildirStore(template, locker_from_options(values, lock_url),
                            create=values["create"] == "yes", dele=values["dele"],
                            uidl=values["uidl"])


def _joined_values(options: list[str]) -> list[str]:
    """The options with ``uidl=dovecot:TEMPLATE`` whole again (the
    argument string was split at every ``:``)."""
    joined: list[str] = []
    for option in options:
        if joined and joined[-1].startswith("uidl=") and "=" not in option:
            joined[-1] += ":" + option
        else:
            joined.append(option)
    return joined

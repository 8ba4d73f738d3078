"""The mbox store as popframe sees it: :class:`MboxStore` opens a locked
snapshot of a user's mbox and delivers into it, :class:`MboxMaildrop`
serves the snapshot to one session, :class:`MboxStoreFactory` is the
``--store=mbox:TEMPLATE`` plugin.  The blocking work is
:class:`~popframe.stores.mbox.mailbox.Mbox`'s, in threads.

Two kinds of lock, for two lengths of time:

- the session lock, held from login to the end of the session: ``flock``
  on ``.NAME.popframe-lock`` beside the mbox (any
  :class:`~popframe.interfaces.IMaildropLocker`), which only POP3
  sessions take, so deliveries go on during a long session;
- the mbox locks (``fcntl`` and the dotlock), which every program that
  writes the mbox takes, held for the snapshot at login, for each
  delivery, and for the rewrite at QUIT.
"""

from __future__ import annotations

import io
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
    IImportingStore,
    IListableStore,
    IMaildrop,
    IMaildropLock,
    IMaildropLocker,
    IMaildropStoreFactory,
    IMessageBody,
    MessageList,
    UserSettings,
)
from popframe.protocol.listing import valid_uid
from popframe.stores import RunBlocking
from popframe.stores.base import LockedMaildrop
from popframe.stores.location import (
    HomeTemplate,
    WrongMaildrop,
    check_owner,
    maildrop_path,
    store_template,
    template_users,
)
from popframe.stores.locking import FileLocker
from popframe.stores.mbox.files import LOCK, RETRIEVED, side_path
from popframe.stores.mbox.index import is_digest_form
from popframe.stores.mbox.locks import LockTimeout
from popframe.stores.mbox.mailbox import Mbox, MboxChanged, Snapshot
from popframe.stores.mbox.reader import MessageReader
from popframe.stores.options import (
    DELE_DEFAULT,
    DELE_OPTION,
    parse_store_options,
    positive_seconds,
)
from popframe.stores.template import PathTemplate, UnsafeUserName
from popframe.stores.uidstate import date_retrievals, retrieved_before

__all__ = ["MboxMaildrop", "MboxStore", "MboxStoreFactory", "MessageMoved"]

log = Logger(namespace="popframe.stores.mbox")


class MessageMoved(TemporaryFailure):
    """Another program rewrote the mbox during the session; a reconnect
    lists it as it now is."""

    default_message = "the mailbox was changed by another program, please reconnect"


def _temporary(failure: Failure, doing: str, path: str) -> Failure:
    """What a store error means to a client or an MTA: try again later."""
    if failure.check(LockTimeout):
        log.warn("mbox {path}: cannot {doing}: locked by another program for too long",
                 path=path, doing=doing)
        return Failure(TemporaryFailure())
    if failure.check(OSError):
        log.error("mbox {path}: cannot {doing}: {error}", path=path, doing=doing,
                  error=failure.value)
        return Failure(TemporaryFailure())
    return failure


@implementer(IExpiringMaildrop)
class MboxMaildrop(LockedMaildrop):
    """One session's locked snapshot of an mbox."""

    def __init__(self, mbox: Mbox, snapshot: Snapshot, lock: IMaildropLock | None,
                 run_blocking: RunBlocking) -> None:
        super().__init__(lock)
        self._mbox = mbox
        self._snapshot = snapshot
        self._run = run_blocking

    def listing(self) -> MessageList:
        return self._snapshot.listing

    def open_message(self, uid: str) -> defer.Deferred[BinaryIO | IMessageBody]:
        self.check_open()
        position = self._snapshot.position(uid)
        if position is None:
            return defer.fail(NoSuchMessage())
        try:
            reader: MessageReader = self._mbox.open_message(self._snapshot, position)
        except MboxChanged:
            return defer.fail(MessageMoved())
        except OSError:
            return defer.fail(_temporary(Failure(), "open a message", self._mbox.path))
        return defer.succeed(reader)  # type: ignore[arg-type]

    def record_retrieved(self, uids: Sequence[str], when: float) -> defer.Deferred[None]:
        """EXPIRE: dates in ``.NAME.popframe-retrieved`` beside the mbox."""
        if not uids:
            return defer.succeed(None)
        listed = set(self._snapshot.listing.uids)
        return self._run(date_retrievals, side_path(self._mbox.path, RETRIEVED), listed,
                         list(uids), when)

    def retrieved_before(self, cutoff: float) -> defer.Deferred[list[str]]:
        return self._run(retrieved_before, side_path(self._mbox.path, RETRIEVED),
                         list(self._snapshot.listing.uids), cutoff)

    def apply_deletions(self, uids: list[str]) -> defer.Deferred[None]:
        d = self._run(self._mbox.delete, uids)
        return d.addCallbacks(lambda _: None, _temporary,
                              errbackArgs=("commit deletions", self._mbox.path))


@implementer(IDeliverableStore, IImportingStore, IListableStore)
class MboxStore:
    """mbox files at a path template, e.g. ``/var/mail/%u``.  The directory
    must exist and be writable (for the dotlock, popframe's files beside
    the mbox, and rewrites); a missing mbox is an empty maildrop, created
    at the first delivery."""

    def __init__(self, template: str | PathTemplate | HomeTemplate,
                 locker: IMaildropLocker | None = None, *,
                 lock_timeout: float = 30.0, stale_lock: float = 500.0, dele: str = "unlink",
                 run_blocking: RunBlocking = deferToThread) -> None:
        self.template = store_template(template)
        self.locker = locker if locker is not None else FileLocker()
        self.lock_timeout = lock_timeout
        self.stale_lock = stale_lock
        self.dele = dele
        self._run = run_blocking

    def _mbox(self, user: str, settings: UserSettings | None = None) -> Mbox:
        path = maildrop_path(self.template, user, settings, "mbox")
        if path.endswith(".lock"):  # user "alice.lock" would be alice's dotlock
            raise UnsafeUserName("the mbox would be another mbox's dotlock")
        return Mbox(path, self.lock_timeout, self.stale_lock, hide=self.dele == "hide")

    def open(self, user: str, settings: UserSettings | None = None) -> defer.Deferred[IMaildrop]:
        return defer.Deferred.fromCoroutine(self._open(user, settings))

    def users(self) -> defer.Deferred[list[str]]:
        """:class:`~popframe.interfaces.IListableStore`: the users whose
        mbox files exist at the template's paths."""
        return self._run(lambda: [u for u in template_users(self.template)
                                  if not u.startswith(".") and not u.endswith(".lock")])

    async def _open(self, user: str, settings: UserSettings | None = None) -> IMaildrop:
        try:
            mbox = self._mbox(user, settings)
            check_owner(mbox.path, settings, user)
        except UnsafeUserName as e:
            log.warn("refusing user name {user!r}: {reason}", user=user, reason=e.reason)
            raise
        lock = await self.locker.acquire(side_path(mbox.path, LOCK))
        try:
            snapshot = await self._run(mbox.snapshot).addErrback(
                _temporary, "read the mailbox", mbox.path)
        except BaseException:
            await lock.release()
            raise
        return MboxMaildrop(mbox, snapshot, lock, self._run)

    def deliver(self, user: str, message: BinaryIO,
                settings: UserSettings | None = None) -> defer.Deferred[None]:
        """:class:`~popframe.interfaces.IDeliverableStore`: appended under
        the mbox locks, whether or not a session holds the maildrop."""
        try:
            mbox = self._mbox(user, settings)
        except WrongMaildrop:
            return defer.fail()
        except UnsafeUserName as e:
            log.warn("refusing user name {user!r}: {reason}", user=user, reason=e.reason)
            return defer.fail()
        d = self._run(mbox.append, message)
        return d.addCallbacks(lambda _: None, _temporary, errbackArgs=("deliver", mbox.path))


    def add_message(self, user: str, message: BinaryIO, uid: str) -> defer.Deferred[None]:
        """:class:`~popframe.interfaces.IImportingStore`: appended with an
        ``X-UIDL: uid`` header first, which the index takes as its UIDL
        (:mod:`~popframe.stores.mbox.index`), so the UIDL survives any
        rewrite and a lost index."""
        try:
            self.check_uid(uid)
        except ValueError:
            return defer.fail()
        octets = message.read()
        ending = b"\r\n" if octets.split(b"\n", 1)[0].endswith(b"\r") else b"\n"
        header = b"X-UIDL: " + uid.encode("ascii") + ending
        return self.deliver(user, io.BytesIO(header + octets))

    def check_uid(self, uid: str) -> None:
        if not valid_uid(uid) or is_digest_form(uid):
            raise ValueError(f"{uid!r} cannot be an mbox UIDL (an X-UIDL of a digest's form "
                             "is not taken)")

    def stored_size(self, uid: str, size: int) -> int:
        return size + len("X-UIDL: \r\n") + len(uid)


@implementer(IMaildropStoreFactory)
class MboxStoreFactory:
    storeName = "mbox"
    argStringFormat = ("mbox:/var/mail/%u[:lock_timeout=SECONDS][:stale_lock=SECONDS]"
                       "[:dele=hide]")
    storeHelp = """\
Traditional Unix mbox files at a path template (%u, %n, %d, %% as for
maildir).  Locks as Postfix, procmail and mutt do (fcntl, then the
NAME.lock dotlock), held briefly: Postfix can deliver during a session.
mboxrd From-quoting; QUIT's deletions rewrite the file crash-safely.
lock_timeout (30): seconds to wait for the mbox locks; stale_lock (500):
age at which another program's dotlock is broken.  Files of popframe's
own sit beside each mbox as .NAME.popframe-*.  dele=hide: DELE keeps the
message in the mbox and hides it from POP3 (its UIDL noted in
.NAME.popframe-hidden; no rewrite); dele=unlink (the default) removes it.
"""

    def storeFromString(self, argstring: str) -> MboxStore:
        template, *options = argstring.split(":")
        if not template:
            raise ConfigurationError(
                "--store", f"mbox needs a path template, e.g. {self.argStringFormat}")
        settings = parse_store_options(
            "mbox", options, {"lock_timeout": positive_seconds, "stale_lock": positive_seconds,
                              **DELE_OPTION},
            {"lock_timeout": 30.0, "stale_lock": 500.0, **DELE_DEFAULT})
        return MboxStore(template, lock_timeout=settings["lock_timeout"],
                         stale_lock=settings["stale_lock"], dele=settings["dele"])

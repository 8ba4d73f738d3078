"""The contract of a mailbox store: where maildrops live, how one is opened
and locked for a session, read, and changed at QUIT.

Every call that may touch a disk, a database or the network returns a
Deferred, so a store can be a local Maildir or a PostgreSQL cluster without
the server noticing.  Failures are the types in :mod:`popframe.errors`:
``MaildropInUse`` (``[IN-USE]``), ``TemporaryFailure`` (``[SYS/TEMP]``: may
pass, e.g. a database restart), ``PermanentFailure`` (``[SYS/PERM]``),
``NoSuchMessage``.  Anything else is logged with its traceback and answered
``[SYS/TEMP]``; the client never sees it.

The rules every store keeps (the contract suite in
:mod:`popframe.testing.contracts` checks them):

- A maildrop is locked for one session at a time, across processes and,
  for shared stores, across hosts; a second open fails with
  ``MaildropInUse`` at once (no waiting), and a released lock can be taken
  again.  A process that dies holding a lock must not keep it forever.
- The listing is a snapshot at open.  Mail delivered later is invisible to
  the session and never deleted by it.
- Nothing is deleted before ``commit``, which applies every deletion or
  none.  ``abandon`` (and a dropped connection, and a crash) deletes
  nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, BinaryIO

from twisted.internet.defer import Deferred
from twisted.plugin import IPlugin
from zope.interface import Attribute, Interface

from popframe.protocol.listing import MessageInfo

if TYPE_CHECKING:
    from popframe.interfaces.auth import UserSettings

__all__ = [
    "IDeliverableStore",
    "IExpiringMaildrop",
    "IFencedLock",
    "IImportingStore",
    "IListableStore",
    "IMaildrop",
    "IMaildropLock",
    "IMaildropLocker",
    "IMaildropStore",
    "IMaildropStoreFactory",
    "IMessageBody",
    "IProcessLocalStore",
]


class IMessageBody(Interface):
    """A stored message read chunk by chunk, for stores whose reads may be
    slow (SQL, object storage, network file systems).

    The server asks for one chunk at a time, and for the next only once the
    client has taken the last one: a client that stops reading stops the
    reads, so nothing piles up in memory (the back-pressure), and a 100 MB
    message is never held whole.  At most one ``read`` is outstanding.
    """

    def read(size: int) -> Deferred[bytes]:
        """Fire with the next octets of the stored message, at most
        ``size`` of them and at least one, or ``b""`` at the end.  Fail with
        ``TemporaryFailure`` when the store cannot read now: the server then
        drops the connection (the ``+OK`` is already out), and deletes
        nothing."""

    def close() -> None:
        """Release what the reads hold (a cursor, a connection).  Called
        exactly once: after the end, or as soon as the client leaves."""


class IMaildrop(Interface):
    """One user's maildrop, opened and exclusively locked for one session.

    Deletion marks live in the session, not here, until ``commit``.
    :class:`popframe.stores.LockedMaildrop` implements the life of one (the
    lock released exactly once, ``abandon`` waiting for a commit under way);
    a store subclasses it and provides ``listing``, ``open_message`` and
    ``apply_deletions``.
    """

    def listing() -> Sequence[MessageInfo]:
        """The messages as the session numbers them (message 1 is index 0),
        oldest first: a :class:`~popframe.protocol.listing.MessageList`, or
        any sequence of ``MessageInfo`` (a MessageList is faster for long
        listings).  Each ``uid`` obeys RFC 1939 section 7 (1 to 70
        characters in 0x21..0x7E), is unique in the maildrop, and is the
        same in every session for the same message; each ``size`` is the
        octets RETR sends (:func:`popframe.protocol.encoding.wire_size`).
        Called synchronously: compute it at open."""

    def open_message(uid: str) -> Deferred[BinaryIO | IMessageBody]:
        """Fire with the stored octets of a listed message (LF or CRLF line
        ends, as stored; the server encodes them for the wire), as either

        - a binary file object at the start of the message, read with plain
          synchronous ``read(n)`` calls on the reactor thread: only for a
          local file or memory, where a read never waits long (the zero-hop
          path: no Deferred per chunk); or
        - an :class:`IMessageBody`, read asynchronously: for anything else.

        The server closes it.  Fails with ``NoSuchMessage`` for a uid that
        is not in the listing, ``TemporaryFailure`` when it cannot be read
        now."""

    def commit(deleted: list[str]) -> Deferred[None]:
        """Apply the deletions of UPDATE state (RFC 1939 section 6), all or
        none, then release the lock.  A crash at any point must leave every
        message or none of ``deleted`` deleted, and never another message.
        """

    def abandon() -> Deferred[None]:
        """Release the lock, changing nothing.  Safe to call after
        ``commit`` and more than once."""


class IExpiringMaildrop(IMaildrop):
    """An :class:`IMaildrop` that dates retrievals, so RFC 2449 EXPIRE can
    be enforced: the server tells it at QUIT what RETR sent, and
    ``popframe expire`` (or the service's sweep) asks which messages were
    retrieved long enough ago, then commits their deletion."""

    def record_retrieved(uids: Sequence[str], when: float) -> Deferred[None]:
        """Note that these listed messages were retrieved at ``when`` (Unix
        seconds); a message already dated keeps its first date.  Called
        at QUIT, under the lock, before :meth:`commit`."""

    def retrieved_before(cutoff: float) -> Deferred[list[str]]:
        """The uids of listed messages retrieved before ``cutoff``."""


class IMaildropStore(Interface):
    """Where maildrops live."""

    def open(user: str, settings: UserSettings | None = None) -> Deferred[IMaildrop]:
        """Fire with a locked :class:`IMaildrop` for ``user`` (a user the
        checkers authenticated), or fail with ``MaildropInUse`` when another
        session anywhere holds it, ``TemporaryFailure`` /
        ``PermanentFailure`` when the store cannot serve it.  ``settings``
        are what the checkers know of the user
        (:class:`~popframe.interfaces.auth.UserSettings`; its ``maildrop``
        is a location of the store's own kind, e.g. a Maildir path), or None.
        A user with no mail yet has an empty maildrop, not an error."""


class IListableStore(IMaildropStore):
    """A store that can name the users it holds maildrops for (``popframe
    expire --all`` and the EXPIRE sweep)."""

    def users() -> Deferred[list[str]]:
        """The users with a maildrop in the store, as :meth:`open` takes
        them."""


class IDeliverableStore(IMaildropStore):
    """A store that mail can be delivered into, by ``popframe deliver`` (the
    LDA) and the LMTP listener, which never know which store they feed."""

    def deliver(user: str, message: BinaryIO,
                settings: UserSettings | None = None) -> Deferred[None]:
        """Add ``message`` to ``user``'s maildrop, exactly the octets read
        from it (a seekable binary file at its start; read it to its end, in
        chunks: it may be large; do not close it).  Fire only once it is
        durably stored (files and directories fsync'd, a transaction
        committed); until then a POP3 session never sees it, and a crash
        leaves it wholly stored or not at all.  Fail with
        ``TemporaryFailure`` when the store cannot take it now (the MTA
        retries), ``PermanentFailure`` when it never will.  A maildrop
        locked by a POP3 session still takes new mail (it shows at the
        next open)."""


class IImportingStore(IMaildropStore):
    """A store that takes a message with the UIDL it had on another server,
    so a migration (``popframe migrate``) changes no UIDL a client knows."""

    def add_message(user: str, message: BinaryIO, uid: str) -> Deferred[None]:
        """Add ``message`` (its octets kept, as ``deliver`` does) to
        ``user``'s maildrop so that its listing gives it the UIDL ``uid``
        (valid by RFC 1939 section 7, not yet in the maildrop).  Durable
        before it fires.  Fail with ``ValueError`` for a uid this store
        cannot keep."""

    def check_uid(uid: str) -> None:
        """Raise ``ValueError``, saying why, if this store cannot keep the
        UIDL ``uid`` (so a migration can refuse before copying anything)."""

    def stored_size(uid: str, size: int) -> int:
        """The RETR size a message of RETR size ``size`` has once added
        under ``uid``: ``size``, unless the store adds octets to keep the
        UIDL (an mbox adds an ``X-UIDL:`` header)."""


class IProcessLocalStore(IMaildropStore):
    """A store whose maildrops live in this process's memory: another
    process (a ``--workers`` worker, another node) sees other maildrops, so
    a deleted message would come back through it.  ``twistd pop3`` serves
    such a store only with ``--workers 1``."""


class IMaildropLocker(Interface):
    """Exclusive locks on maildrops.  A file lock serves one host; a lock in
    a database or Redis spans a cluster, so the call is asynchronous."""

    def acquire(key: str) -> Deferred[IMaildropLock]:
        """Fire with an :class:`IMaildropLock`, or fail with
        ``MaildropInUse`` at once when the lock is held (no waiting)."""


class IMaildropLock(Interface):
    def release() -> Deferred[None]:
        """Release the lock.  Idempotent."""


class IFencedLock(IMaildropLock):
    """A lease on a maildrop (Redis, PostgreSQL) for stores whose files
    are shared by several hosts: it lapses unless renewed, and each grant
    carries a fencing token larger than every earlier grant's.  A store
    that deletes files itself calls :meth:`fence` right before deleting,
    so a node that was paused past its lease (SIGSTOP, a VM migration, a
    long GC) cannot apply a stale commit over a newer holder's session."""

    token = Attribute("This grant's fencing token (an int, increasing per grant).")

    def fence() -> None:
        """Blocking (call it in a thread): renew the lease if this grant
        is still the current one, else raise ``LockLost``; raise
        ``TemporaryFailure`` when the lease server cannot answer."""


class IMaildropStoreFactory(IPlugin):
    """A store plugin, found with ``twisted.plugin.getPlugins`` and named on
    the command line as ``--store=NAME:ARGUMENTS`` (as ``--auth`` names a
    ``twisted.cred.strcred.ICheckerFactory``).  Ship it as a module in your
    package's ``twisted/plugins/`` directory (no ``__init__.py`` there)."""

    storeName = Attribute("The NAME in --store=NAME:ARGUMENTS, e.g. 'maildir'.")
    storeHelp = Attribute("A description of the store, for --help-stores.")
    argStringFormat = Attribute("A one-line description of ARGUMENTS.")

    def storeFromString(argstring: str) -> IMaildropStore:
        """Build the store.  Raise ``popframe.config.ConfigurationError``
        naming the problem when the arguments are wrong."""

"""The interfaces a backend implements.

Every call that may touch a disk, a database or the network returns a
Deferred, so one store can be a local Maildir and another a PostgreSQL
cluster without the server noticing.  Failures are the types in
:mod:`popframe.errors` (wrapped in the Deferred's Failure).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import overload

from twisted.plugin import IPlugin
from zope.interface import Attribute, Interface


@dataclass(frozen=True, slots=True)
class MessageInfo:
    """One message of a maildrop's listing.

    ``uid`` is the UIDL value: 1 to 70 characters in 0x21..0x7E, stable
    across sessions (RFC 1939 section 7).  ``size`` is the exact number of
    octets RETR sends before the terminating ``.``: line ends as CRLF, no
    dot-stuffing, and a final CRLF added if the stored message lacks one.
    ``wire_ready``: the stored octets already are exactly those octets
    (:class:`popframe.protocol.encoding.WireForm`), so RETR sends them
    unchanged; False (unknown) always works.
    """

    uid: str
    size: int
    wire_ready: bool = False


class MessageList(Sequence[MessageInfo]):
    """A listing kept by columns: the uids, the sizes, and one octet per
    message that is 1 where the message is wire-ready, 0 elsewhere.

    Indexing makes the :class:`MessageInfo` of one message; a session asks
    for few (RETR, LIST n) and reads the columns for the rest (STAT, UIDL,
    LIST).  Loading 100,000 messages as columns takes a few split calls;
    as objects it took four times as long, and a pass of the garbage
    collector.  Stores may return any sequence of ``MessageInfo``; the
    session takes it as :meth:`of` gives it.
    """

    __slots__ = ("uids", "sizes", "ready", "total")

    uids: Sequence[str]
    sizes: Sequence[int]
    ready: bytes
    total: int  # octets in all

    def __init__(self, uids: Sequence[str], sizes: Sequence[int], ready: bytes) -> None:
        if not len(uids) == len(sizes) == len(ready):
            raise ValueError("columns of different lengths")
        self.uids = uids
        self.sizes = sizes
        self.ready = ready
        self.total = sum(sizes)

    @classmethod
    def of(cls, messages: Iterable[MessageInfo]) -> MessageList:
        """``messages`` as a MessageList (itself if it is one)."""
        if isinstance(messages, MessageList):
            return messages
        messages = list(messages)
        return cls(
            [m.uid for m in messages],
            [m.size for m in messages],
            bytes(m.wire_ready for m in messages),
        )

    def __len__(self) -> int:
        return len(self.uids)

    @overload
    def __getitem__(self, index: int) -> MessageInfo: ...
    @overload
    def __getitem__(self, index: slice) -> MessageList: ...
    def __getitem__(self, index: int | slice) -> MessageInfo | MessageList:
        if isinstance(index, slice):
            return MessageList(self.uids[index], self.sizes[index], self.ready[index])
        return MessageInfo(self.uids[index], self.sizes[index], self.ready[index] == 1)

    def __iter__(self) -> Iterator[MessageInfo]:
        return map(MessageInfo, self.uids, self.sizes, map((1).__eq__, self.ready))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, MessageList):
            return (
                list(self.uids) == list(other.uids)
                and list(self.sizes) == list(other.sizes)
                and self.ready == other.ready
            )
        if isinstance(other, (list, tuple)):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"MessageList({list(self)!r})"


class IMaildrop(Interface):
    """One user's maildrop, opened and exclusively locked for one session.

    The listing is a snapshot taken when the maildrop was opened: mail
    delivered afterwards is invisible to the session and never deleted by
    it.  Deletion marks live in the session, not here, until ``commit``.
    """

    def listing() -> Sequence[MessageInfo]:
        """The messages as the session numbers them (message 1 is index 0):
        a :class:`MessageList`, or any sequence of ``MessageInfo`` (a
        MessageList is faster for long listings)."""

    def open_message(uid: str):
        """Return a Deferred firing with a binary file object at the start of
        the message as stored (LF or CRLF line ends).  The caller closes it.
        """

    def commit(deleted: list[str]):
        """Apply the deletions of UPDATE state (RFC 1939 section 6) all or
        none, then release the lock.  Returns a Deferred.
        """

    def abandon():
        """Release the lock, changing nothing.  Returns a Deferred.  Safe to
        call after ``commit`` and more than once.
        """


class IMaildropStore(Interface):
    """Where maildrops live."""

    def open(user: str):
        """Return a Deferred firing with a locked :class:`IMaildrop` for
        ``user``, or failing with ``MaildropInUse`` when another session
        anywhere holds it, ``TemporaryFailure`` / ``PermanentFailure`` when
        the store cannot serve it.
        """


class IMaildropLocker(Interface):
    """Exclusive locks on maildrops.  A file lock serves one host; a lock in
    a database or Redis spans a cluster, so the call is asynchronous.
    """

    def acquire(key: str):
        """Return a Deferred firing with an :class:`IMaildropLock`, or failing
        with ``MaildropInUse`` at once when the lock is held (no waiting).
        """


class IMaildropLock(Interface):
    def release():
        """Release the lock.  Returns a Deferred.  Idempotent."""


class IMaildropStoreFactory(IPlugin):
    """A store plugin, found with ``twisted.plugin.getPlugins`` and named on
    the command line as ``--store=NAME:ARGUMENTS`` (like ``--auth``).
    """

    storeName = Attribute("The NAME in --store=NAME:ARGUMENTS, e.g. 'maildir'.")
    storeHelp = Attribute("A description of the store, for --help-stores.")
    argStringFormat = Attribute("A one-line description of ARGUMENTS.")

    def storeFromString(argstring: str) -> IMaildropStore:
        """Build the store.  Raise ``popframe.config.ConfigurationError``
        naming the problem when the arguments are wrong.
        """

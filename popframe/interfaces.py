"""The interfaces a backend implements.

Every call that may touch a disk, a database or the network returns a
Deferred, so one store can be a local Maildir and another a PostgreSQL
cluster without the server noticing.  Failures are the types in
:mod:`popframe.errors` (wrapped in the Deferred's Failure).
"""

from __future__ import annotations

from dataclasses import dataclass

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


class IMaildrop(Interface):
    """One user's maildrop, opened and exclusively locked for one session.

    The listing is a snapshot taken when the maildrop was opened: mail
    delivered afterwards is invisible to the session and never deleted by
    it.  Deletion marks live in the session, not here, until ``commit``.
    """

    def listing() -> list[MessageInfo]:
        """The messages as the session numbers them (message 1 is index 0)."""

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

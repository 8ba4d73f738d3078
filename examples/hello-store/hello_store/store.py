"""The hello store: every user's maildrop holds a greeting, plus whatever
was delivered to them, and DELE + QUIT really deletes.

Where its state lives, truthfully: in a dict in this process's memory.  A
restart forgets deletions and deliveries, and another process (a
``--workers`` worker) would keep a dict of its own, where a deleted message
is still there.  So the store declares ``IProcessLocalStore``, and ``twistd
pop3`` refuses to run it with ``--workers`` above 1.  A store kept in
files, a database or a server declares no such thing.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Sequence
from typing import Any, BinaryIO

from twisted.internet import defer
from zope.interface import implementer

from hello_store.body import ChunkedBody
from popframe.errors import NoSuchMessage
from popframe.interfaces import (
    IDeliverableStore,
    IMaildrop,
    IMaildropLock,
    IMessageBody,
    IProcessLocalStore,
    MessageInfo,
    UserSettings,
)
from popframe.protocol.encoding import wire_size
from popframe.stores.base import LockedMaildrop
from popframe.stores.locking import MemoryLocker

__all__ = ["GREETING_UID", "HelloMaildrop", "HelloStore"]

#: The greeting's UIDL.  A uid is 1 to 70 characters in 0x21..0x7E, unique
#: in its maildrop and the same in every session (RFC 1939 section 7): a
#: client that sees a uid again takes the message for one it already has.
GREETING_UID = "greeting"


@implementer(IDeliverableStore, IProcessLocalStore)
class HelloStore:
    """``maildrops`` maps a user to ``{uid: stored octets}``, oldest first
    (dicts keep their order).  ``greeting``: the text of the message a user
    finds at their first visit; None, none (a new user's maildrop is then
    empty, as the contract suite expects).  ``reactor``: see
    :class:`~hello_store.body.ChunkedBody`."""

    def __init__(self, greeting: str | None = None, reactor: Any = None) -> None:
        self.greeting = greeting
        self.reactor = reactor
        self.maildrops: dict[str, dict[str, bytes]] = {}
        self.locker = MemoryLocker()  # one session per maildrop, in this process
        self._uids = (f"m{n}" for n in itertools.count(1))  # never reused

    def open(self, user: str, settings: UserSettings | None = None) -> defer.Deferred[IMaildrop]:
        """Lock, then snapshot.  A second session fails at once with
        ``MaildropInUse`` (``-ERR [IN-USE]``): no waiting for the lock."""
        return self.locker.acquire(user).addCallback(self._opened, user)

    def _opened(self, lock: IMaildropLock, user: str) -> IMaildrop:
        return HelloMaildrop(self, user, dict(self._messages(user)), lock)

    def deliver(self, user: str, message: BinaryIO,
                settings: UserSettings | None = None) -> defer.Deferred[None]:
        """``IDeliverableStore``: read the message in chunks (it may be
        large) and add it.  A store that keeps mail for real fires only
        once it is durable; this one keeps it until the process ends."""
        octets = b"".join(iter(lambda: message.read(65536), b""))
        self._messages(user)[next(self._uids)] = octets
        return defer.succeed(None)

    def remove(self, user: str, uids: set[str]) -> None:
        """All or none: one assignment, nothing to interrupt it."""
        messages = self._messages(user)
        self.maildrops[user] = {u: m for u, m in messages.items() if u not in uids}

    def _messages(self, user: str) -> dict[str, bytes]:
        if user not in self.maildrops:  # a user's first visit
            first = {} if self.greeting is None else {GREETING_UID: greeting(user, self.greeting)}
            self.maildrops[user] = first
        return self.maildrops[user]


@implementer(IMaildrop)
class HelloMaildrop(LockedMaildrop):
    """One session's view.  ``LockedMaildrop`` does ``commit`` and
    ``abandon`` (the lock released exactly once, whatever happens); a
    store writes the three methods below."""

    def __init__(self, store: HelloStore, user: str, messages: dict[str, bytes],
                 lock: IMaildropLock) -> None:
        super().__init__(lock)
        self._store, self._user, self._messages = store, user, messages
        # Sizes are the octets RETR sends (CRLF line ends), not the stored
        # ones: clients check LIST against what arrives.
        self._listing = [MessageInfo(uid, wire_size(m)) for uid, m in messages.items()]

    def listing(self) -> Sequence[MessageInfo]:
        """The snapshot taken at open: mail delivered since is not in it."""
        return self._listing

    def open_message(self, uid: str) -> defer.Deferred[BinaryIO | IMessageBody]:
        """Both ways to hand over a body: the greeting, made here in
        memory, as a file object (the server reads it at once); delivered
        mail as an ``IMessageBody``, read chunk by chunk, as a store whose
        reads wait (a database, object storage) must."""
        self.check_open()
        octets = self._messages.get(uid)
        if octets is None:
            return defer.fail(NoSuchMessage())
        if uid == GREETING_UID:
            return defer.succeed(io.BytesIO(octets))
        return defer.succeed(ChunkedBody(octets, self._store.reactor))

    def apply_deletions(self, uids: list[str]) -> defer.Deferred[None]:
        """Called by ``commit`` after QUIT, with listed uids only."""
        self._store.remove(self._user, set(uids))
        return defer.succeed(None)


def greeting(user: str, text: str) -> bytes:
    """Stored with bare LF line ends, as many MTAs write mail; popframe
    sends CRLF and dot-stuffs lines that start with "."."""
    return (f"From: popframe <postmaster@localhost>\nTo: {user}\n"
            f"Subject: Hello, {user}\n\n{text}\n").encode()

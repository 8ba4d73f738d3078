"""A store in a dict: for tests, demos, and as the smallest example of a
backend.  Same contract as the Maildir store: a locked snapshot at open,
deletions applied at commit, mail delivered meanwhile untouched.  Its
maildrops live in this process's memory (``IProcessLocalStore``).
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterable, Mapping
from typing import BinaryIO

from twisted.internet import defer
from zope.interface import implementer

from popframe.errors import NoSuchMessage
from popframe.interfaces import (
    IMaildrop,
    IMaildropLock,
    IMaildropLocker,
    IMessageBody,
    IProcessLocalStore,
    MessageList,
    UserSettings,
    valid_uid,
)
from popframe.protocol.encoding import wire_form
from popframe.stores.base import LockedMaildrop
from popframe.stores.locking import MemoryLocker

__all__ = ["MemoryMaildrop", "MemoryStore"]


@implementer(IProcessLocalStore)
class MemoryStore:
    """``maildrops`` maps a user to ``[(uid, message bytes), ...]``, oldest
    first; a user without an entry has an empty maildrop.

    ``MemoryStore({"alice": [b"Subject: hi\\n\\nhello\\n"]})`` fills it,
    giving each message a fresh uid unless it comes as ``(uid, bytes)``.
    """

    def __init__(
        self,
        maildrops: Mapping[str, Iterable[bytes | tuple[str, bytes]]] | None = None,
        locker: IMaildropLocker | None = None,
    ) -> None:
        self.maildrops: dict[str, list[tuple[str, bytes]]] = {}
        self.locker = locker if locker is not None else MemoryLocker()
        self._next_uid = itertools.count(1)
        for user, messages in (maildrops or {}).items():
            self.maildrops[user] = []
            for message in messages:
                if isinstance(message, tuple):
                    self.deliver(user, message[1], uid=message[0])
                else:
                    self.deliver(user, message)

    def deliver(self, user: str, message: bytes, uid: str | None = None) -> str:
        """Add a message (as stored: LF or CRLF) and return its uid."""
        maildrop = self.maildrops.setdefault(user, [])
        if uid is None:
            uid = f"m{next(self._next_uid)}"
        if not valid_uid(uid) or any(uid == u for u, _ in maildrop):
            raise ValueError(f"uid {uid!r} is not a valid, unused UIDL")
        maildrop.append((uid, message))
        return uid

    def open(self, user: str, settings: UserSettings | None = None) -> defer.Deferred[IMaildrop]:
        return defer.Deferred.fromCoroutine(self._open(user))

    async def _open(self, user: str) -> IMaildrop:
        lock = await self.locker.acquire(user)
        return MemoryMaildrop(self, user, list(self.maildrops.get(user, [])), lock)

    def _remove(self, user: str, uids: set[str]) -> None:
        remaining = [(u, m) for u, m in self.maildrops.get(user, []) if u not in uids]
        self.maildrops[user] = remaining


@implementer(IMaildrop)
class MemoryMaildrop(LockedMaildrop):
    def __init__(
        self,
        store: MemoryStore,
        user: str,
        messages: list[tuple[str, bytes]],
        lock: IMaildropLock,
    ) -> None:
        super().__init__(lock)
        self._store = store
        self._user = user
        self._messages = dict(messages)
        forms = [wire_form(m) for _, m in messages]
        self._listing = MessageList(
            [uid for uid, _ in messages], [f.size for f in forms], bytes(f.ready for f in forms)
        )

    def listing(self) -> MessageList:
        return self._listing

    def open_message(self, uid: str) -> defer.Deferred[BinaryIO | IMessageBody]:
        self.check_open()
        message = self._messages.get(uid)
        if message is None:
            return defer.fail(NoSuchMessage())
        return defer.succeed(io.BytesIO(message))

    def apply_deletions(self, uids: list[str]) -> defer.Deferred[None]:
        self._store._remove(self._user, set(uids))
        return defer.succeed(None)

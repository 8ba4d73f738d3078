"""The life of an opened maildrop, written once for every store."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import BinaryIO

from twisted.internet import defer

from popframe.interfaces import IMaildropLock, IMessageBody, MessageInfo, MessageList

__all__ = ["LockedMaildrop"]


class LockedMaildrop:
    """An opened, locked maildrop: one ``commit`` or ``abandon``, and the
    lock released exactly once whichever way the session ends.  An
    ``abandon()`` during a commit (the client hung up after QUIT) waits for
    the commit instead of releasing the lock under it.

    A store subclasses it (and declares ``@implementer(IMaildrop)``) and
    provides:

    - :meth:`listing`: the snapshot taken at open;
    - :meth:`open_message`: a listed message's stored octets;
    - :meth:`apply_deletions`: remove the given uids, all or none.

    ``lock`` is the :class:`~popframe.interfaces.IMaildropLock` the store
    took at open (None for a store that needs none).
    """

    def __init__(self, lock: IMaildropLock | None) -> None:
        self._lock = lock
        self._state = "open"  # -> "closing" -> "closed"
        self._waiting: list[defer.Deferred[None]] = []

    # -- what a store provides ------------------------------------------------------

    def listing(self) -> Sequence[MessageInfo]:
        raise NotImplementedError

    def open_message(self, uid: str) -> defer.Deferred[BinaryIO | IMessageBody]:
        raise NotImplementedError

    def apply_deletions(self, uids: list[str]) -> Awaitable[None]:
        """Delete these listed uids (each once, at least one), all or none:
        after a crash at any point, either every one is gone or none is,
        and no other message.  Return a Deferred, or be a coroutine
        function.  The lock is released after it, whatever the outcome."""
        raise NotImplementedError

    # -- IMaildrop ---------------------------------------------------------------

    def commit(self, deleted: list[str]) -> defer.Deferred[None]:
        self.check_open()
        self._state = "closing"
        deleted = list(dict.fromkeys(deleted))
        if not deleted:  # the usual QUIT: no coroutine
            return self._release()
        return defer.Deferred.fromCoroutine(self._commit(deleted))

    async def _commit(self, deleted: list[str]) -> None:
        try:
            known = set(MessageList.of(self.listing()).uids)
            unknown = [uid for uid in deleted if uid not in known]
            if unknown:
                raise ValueError(f"uids not in the listing: {unknown!r}")
            await self.apply_deletions(deleted)
        finally:
            await self._release()

    def abandon(self) -> defer.Deferred[None]:
        if self._state == "open":
            self._state = "closing"
            return self._release()
        if self._state == "closing":
            waiter: defer.Deferred[None] = defer.Deferred()
            self._waiting.append(waiter)
            return waiter
        return defer.succeed(None)

    def check_open(self) -> None:
        """Raise unless the maildrop is still open (for a store's
        ``open_message``: a message is not read after the session ended)."""
        if self._state != "open":
            raise RuntimeError(f"the maildrop is {self._state}")

    def _release(self) -> defer.Deferred[None]:
        """Release the lock; then the maildrop is closed, whatever the
        release's outcome, and whoever waits for that is told."""
        try:
            released = self._lock.release() if self._lock is not None else defer.succeed(None)
        except BaseException:
            released = defer.fail()

        def closed(result: object) -> object:
            self._state = "closed"
            waiting, self._waiting = self._waiting, []
            for waiter in waiting:
                waiter.callback(None)
            return result

        return released.addBoth(closed)

"""Maildrop stores, and finding them by name.

Each store plugin provides :class:`~popframe.interfaces.IMaildropStoreFactory`
and is named on the command line as ``--store=NAME:ARGUMENTS``, e.g.
``--store=maildir:/var/mail/%u/Maildir``; third-party packages add stores by
shipping a module in ``twisted/plugins/``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet import defer
from twisted.plugin import getPlugins

from popframe.config import ConfigurationError
from popframe.interfaces import (
    IMaildropLock,
    IMaildropStore,
    IMaildropStoreFactory,
    MessageInfo,
    MessageList,
)

#: How a store runs blocking work: ``deferToThread`` in the server,
#: :func:`run_synchronously` in tests that want no reactor.
RunBlocking = Callable[..., "defer.Deferred[Any]"]


def run_synchronously(f: Callable[..., Any], *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
    """Run ``f`` now, on this thread, and wrap its outcome in a Deferred."""
    return defer.maybeDeferred(f, *args, **kwargs)


def find_store_factories() -> list[IMaildropStoreFactory]:
    """The installed store plugins (``twisted.plugin.getPlugins``)."""
    return list(getPlugins(IMaildropStoreFactory))


def store_from_description(description: str, key: str = "--store") -> IMaildropStore:
    """Build a store from ``NAME:ARGUMENTS``, as ``--store`` takes it."""
    name, _, arguments = description.partition(":")
    factories = {f.storeName: f for f in find_store_factories()}
    factory = factories.get(name)
    if factory is None:
        known = ", ".join(sorted(factories)) or "none installed"
        raise ConfigurationError(key, f"no such store {name!r} (known: {known})")
    try:
        return factory.storeFromString(arguments)
    except ConfigurationError as e:
        if e.key == key:
            raise
        raise ConfigurationError(key, e.problem) from None


class LockedMaildrop:
    """The life of an opened maildrop, shared by stores: open, then one
    ``commit`` or ``abandon``, the lock released exactly once.  An
    ``abandon()`` during a commit (the client hung up after QUIT) waits for
    the commit instead of releasing the lock under it.

    Subclasses provide ``listing``, ``open_message`` and :meth:`_delete`.
    """

    def __init__(self, lock: IMaildropLock | None) -> None:
        self._lock = lock
        self._state = "open"  # -> "closing" -> "closed"
        self._waiting: list[defer.Deferred[None]] = []

    def listing(self) -> Sequence[MessageInfo]:
        raise NotImplementedError

    async def _delete(self, deleted: list[str]) -> None:
        """Delete these listed uids, all or none."""
        raise NotImplementedError

    def commit(self, deleted: list[str]) -> defer.Deferred[None]:
        self._check_open()
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
            await self._delete(deleted)
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

    def _check_open(self) -> None:
        if self._state != "open":
            raise RuntimeError(f"the maildrop is {self._state}")

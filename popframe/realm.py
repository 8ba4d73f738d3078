"""The cred realm: an authenticated user becomes an opened, locked maildrop."""

from __future__ import annotations

from collections.abc import Callable

from twisted.cred.portal import IRealm
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import Interface, implementer

from popframe.interfaces import IMaildrop, IMaildropStore, UserSettings
from popframe.twisted_internals import then

__all__ = ["MaildropRealm"]

log = Logger()


@implementer(IRealm)
class MaildropRealm:
    """Opens the avatar's maildrop in ``store``.  The ``mind`` is the user's
    :class:`~popframe.interfaces.UserSettings` (anything else: None), which
    the store gets.  The logout callable abandons the maildrop, which
    releases the lock unless QUIT already committed."""

    def __init__(self, store: IMaildropStore) -> None:
        self.store = store

    def requestAvatar(
        self, avatarId: bytes | tuple[()], mind: object, *interfaces: type[Interface]
    ) -> (tuple[type[Interface], object, Callable[[], None]]
          | Deferred[tuple[type[Interface], object, Callable[[], None]]]):
        if IMaildrop not in interfaces:
            raise NotImplementedError("MaildropRealm only provides IMaildrop")
        if isinstance(avatarId, bytes):
            user = avatarId.decode("utf-8")
        elif isinstance(avatarId, str):  # outside IRealm's types, but taken as it was
            user = avatarId
        else:
            raise NotImplementedError("MaildropRealm has no anonymous maildrop")
        settings = mind if isinstance(mind, UserSettings) else None
        return then(self.store.open(user, settings), _avatar)


def _avatar(maildrop: IMaildrop) -> tuple[type[Interface], object, Callable[[], None]]:
    return IMaildrop, maildrop, lambda: _abandon(maildrop)


def _abandon(maildrop: IMaildrop) -> None:
    maildrop.abandon().addErrback(
        lambda failure: log.failure("releasing a maildrop failed", failure)
    )

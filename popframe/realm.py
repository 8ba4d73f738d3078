"""The cred realm: an authenticated user becomes an opened, locked maildrop."""

from __future__ import annotations

from typing import Any

from twisted.cred.portal import IRealm
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from popframe.interfaces import IMaildrop, IMaildropStore, UserSettings

__all__ = ["MaildropRealm"]

log = Logger()


@implementer(IRealm)
class MaildropRealm:
    """Opens the avatar's maildrop in ``store``.  The ``mind`` is the user's
    :class:`~popframe.interfaces.UserSettings` (or None), which the store
    gets.  The logout callable abandons the maildrop, which releases the
    lock unless QUIT already committed."""

    def __init__(self, store: IMaildropStore) -> None:
        self.store = store

    def requestAvatar(self, avatarId: bytes | str, mind: UserSettings | None,
                      *interfaces: Any) -> Deferred[tuple[Any, IMaildrop, Any]]:
        if IMaildrop not in interfaces:
            raise NotImplementedError("MaildropRealm only provides IMaildrop")
        user = avatarId.decode("utf-8") if isinstance(avatarId, bytes) else avatarId
        return self.store.open(user, mind).addCallback(
            lambda maildrop: (IMaildrop, maildrop, lambda: _abandon(maildrop))
        )


def _abandon(maildrop: IMaildrop) -> None:
    maildrop.abandon().addErrback(
        lambda failure: log.failure("releasing a maildrop failed", failure)
    )

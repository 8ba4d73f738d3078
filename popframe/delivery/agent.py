"""One delivery path for the LDA and the LMTP listener: a recipient is
checked (is it a user the checkers know?), then the spooled message goes
into the store.  Neither knows which store it feeds: any
:class:`~popframe.interfaces.IDeliverableStore`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from twisted.internet import defer
from twisted.python.failure import Failure

from popframe.auth.credentials import user_settings
from popframe.delivery.errors import (
    BadAddress,
    DeliveryFailure,
    NotAMessage,
    UnknownUser,
    as_delivery_failure,
)
from popframe.delivery.recipients import RecipientRules
from popframe.delivery.spool import SpooledMessage
from popframe.interfaces import IDeliverableStore, IUserSettings, UserSettings
from popframe.stores.template import UnsafeUserName, check_user_name

__all__ = ["DeliveryAgent", "Recipient"]


@dataclass(frozen=True, slots=True)
class Recipient:
    """An accepted recipient: the address as given, the user it names, and
    what the checkers know of that user (None when no checker is asked)."""

    address: str
    user: str
    settings: UserSettings | None


class DeliveryAgent:
    """Checks recipients against ``sources`` (the configured checkers that
    provide :class:`~popframe.interfaces.IUserSettings`: a user none of
    them knows is unknown; with no source every user is accepted) and
    delivers into ``store``.  Every failure is a
    :class:`~popframe.delivery.errors.DeliveryFailure`."""

    def __init__(self, store: IDeliverableStore, sources: Sequence[IUserSettings] = (),
                 rules: RecipientRules | None = None) -> None:
        self.store = store
        self.sources = tuple(sources)
        self.rules = rules if rules is not None else RecipientRules()

    @property
    def checks_users(self) -> bool:
        return bool(self.sources)

    def recipient(self, address: str) -> defer.Deferred[Recipient]:
        """The :class:`Recipient` for ``address``, or a failure:
        ``BadAddress``, ``UnknownUser``, or deferred when a checker cannot
        answer now."""
        try:
            user = self.rules.user_for(address)
            check_user_name(user)
        except UnsafeUserName as e:
            return defer.fail(BadAddress(f"bad recipient address: {e.reason}"))
        except DeliveryFailure:
            return defer.fail()
        if not self.sources:
            return defer.succeed(Recipient(address, user, None))

        def known(found: UserSettings | None) -> Recipient:
            if found is None:
                raise UnknownUser()
            return Recipient(address, user, found)

        d = defer.maybeDeferred(user_settings, self.sources, user)
        return d.addCallback(known).addErrback(_as_failure)

    def deliver(self, recipient: Recipient, message: SpooledMessage) -> defer.Deferred[None]:
        """Store ``message`` for ``recipient``; fires once it is durably
        stored."""
        if message.blank:
            return defer.fail(NotAMessage())
        reader = message.open()

        def done(result: object) -> object:
            reader.close()
            return result

        d: defer.Deferred[None] = defer.maybeDeferred(
            self.store.deliver, recipient.user, reader, recipient.settings)
        d.addBoth(done)
        d.addErrback(_as_failure)
        return d


def _as_failure(failure: Failure) -> Failure:
    return Failure(as_delivery_failure(failure))

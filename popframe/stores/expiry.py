"""Enforcing RFC 2449 EXPIRE: remove messages retrieved more than the
user's days ago.  Store-neutral: a maildrop is opened and locked as a
login does, asked which of its messages were retrieved before the cutoff
(:class:`~popframe.interfaces.IExpiringMaildrop`) and committed with
those deleted, so the store's own all-or-none commit (and its ``dele``
mode) applies.  Used by ``popframe expire`` (cron) and the service's
``--expire-sweep``."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from twisted.internet import defer
from twisted.logger import Logger

from popframe.errors import MaildropInUse
from popframe.interfaces import (
    IExpiringMaildrop,
    IListableStore,
    IMaildropStore,
    IUserSettings,
    UserSettings,
)

__all__ = ["DAY", "ExpiryReport", "expire_maildrops", "expire_user"]

log = Logger(namespace="popframe.stores.expiry")

DAY = 86400.0


@dataclass
class ExpiryReport:
    """What one run did: messages removed per user, users skipped."""

    removed: dict[str, int] = field(default_factory=dict)
    in_use: list[str] = field(default_factory=list)  # a session held the maildrop
    failed: list[str] = field(default_factory=list)  # logged
    never: list[str] = field(default_factory=list)  # no EXPIRE for them

    @property
    def total(self) -> int:
        return sum(self.removed.values())


async def expire_user(store: IMaildropStore, user: str, days: int, now: float,
                      settings: UserSettings | None = None) -> int:
    """Remove ``user``'s messages retrieved more than ``days`` days before
    ``now``; how many.  ``MaildropInUse`` while a session holds it."""
    maildrop = await store.open(user, settings)
    if not IExpiringMaildrop.providedBy(maildrop):
        await maildrop.abandon()
        return 0
    try:
        doomed = await maildrop.retrieved_before(now - days * DAY)
    except BaseException:
        await maildrop.abandon()
        raise
    await maildrop.commit(doomed)
    if doomed:
        log.info("expire: removed {count} messages of {user!r} retrieved over {days} days ago",
                 count=len(doomed), user=user, days=days)
    return len(doomed)


async def expire_maildrops(
    store: IMaildropStore, users: Iterable[str] | None, days: int | None, now: float,
    sources: Iterable[IUserSettings] = (),
    progress: Callable[[str, int], None] | None = None,
) -> ExpiryReport:
    """Expire ``users`` (None: every user the store lists, when it is an
    :class:`~popframe.interfaces.IListableStore`).  A user's own EXPIRE
    from ``sources`` (checkers) wins over ``days``; a user with neither is
    left alone.  One user's failure is logged and the run goes on."""
    from popframe.auth.credentials import user_settings

    report = ExpiryReport()
    if users is None:
        if not IListableStore.providedBy(store):
            raise TypeError("this store cannot list its users: name them")
        users = await store.users()
    sources = list(sources)
    for user in users:
        try:
            settings = await user_settings(sources, user) if sources else None
            own = settings.expire if settings is not None else None
            wanted = own if own is not None else days
            if wanted is None:
                report.never.append(user)
                continue
            report.removed[user] = await expire_user(store, user, wanted, now, settings)
            if progress is not None:
                progress(user, report.removed[user])
        except MaildropInUse:
            report.in_use.append(user)
        except Exception:
            log.failure("expire: {user!r} failed", user=user)
            report.failed.append(user)
    return report


def sweep(store: IMaildropStore, days: int | None, clock: Callable[[], float],
          sources: Iterable[IUserSettings] = ()) -> defer.Deferred[ExpiryReport]:
    """One pass of ``--expire-sweep``: every user of the store."""
    return defer.Deferred.fromCoroutine(
        expire_maildrops(store, None, days, clock(), list(sources)))

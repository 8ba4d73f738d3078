"""Several session observers behind one: what a factory calls when more
than one thing watches its sessions (metrics and the logout line).

Each event goes only to the observers that override it (the metrics do not
care about most; the logout line only about the end), and an observer that
raises is logged, never allowed to break the session that called it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.logger import Logger
from zope.interface import implementer

from popframe.interfaces.observers import ISessionObserver, SessionObserver, SessionRecord

__all__ = ["SessionObservers", "combine_observers"]

log = Logger(namespace="popframe.server")

_EVENTS = tuple(name for name in ISessionObserver.names())


def _interested(observers: Sequence[Any], name: str) -> tuple[Callable[..., None], ...]:
    """The bound ``name`` methods of the observers that do something with it."""
    default = getattr(SessionObserver, name)
    return tuple(getattr(o, name) for o in observers
                 if getattr(type(o), name, None) is not default)


@implementer(ISessionObserver)
class SessionObservers:
    """Tells each of ``observers`` what it overrides."""

    def __init__(self, observers: Sequence[Any]) -> None:
        self.observers = tuple(observers)
        self._calls = {name: _interested(self.observers, name) for name in _EVENTS}
        for name, calls in self._calls.items():
            if not calls:  # nobody listens: one empty call, not a loop
                setattr(self, name, _ignore)

    def _tell(self, name: str, *arguments: Any) -> None:
        for call in self._calls[name]:
            try:
                call(*arguments)
            except Exception:
                log.failure("session observer {observer!r} failed in {event}",
                            observer=getattr(call, "__self__", call), event=name)

    def session_opened(self, record: SessionRecord) -> None:
        self._tell("session_opened", record)

    def tls_started(self, record: SessionRecord) -> None:
        self._tell("tls_started", record)

    def login_finished(self, record: SessionRecord, mechanism: str, result: str,
                       seconds: float) -> None:
        self._tell("login_finished", record, mechanism, result, seconds)

    def login_throttled(self, record: SessionRecord, delay: float, dropped: str | None) -> None:
        self._tell("login_throttled", record, delay, dropped)

    def message_sent(self, record: SessionRecord, command: str, octets: int,
                     seconds: float) -> None:
        self._tell("message_sent", record, command, octets, seconds)

    def deletions_committed(self, record: SessionRecord, count: int) -> None:
        self._tell("deletions_committed", record, count)

    def backend_failed(self, role: str, kind: str) -> None:
        self._tell("backend_failed", role, kind)

    def connection_refused(self, limit: str, peer: str) -> None:
        self._tell("connection_refused", limit, peer)

    def session_closed(self, record: SessionRecord) -> None:
        self._tell("session_closed", record)


def _ignore(*arguments: Any) -> None:
    pass


def combine_observers(observers: Sequence[Any]) -> Any:
    """One observer for ``observers``: the no-op one for none (cheapest
    to call), else a :class:`SessionObservers` (which also guards a
    single one against raising)."""
    if not observers:
        return SessionObserver()
    return SessionObservers(observers)

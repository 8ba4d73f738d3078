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
    """Tells each of ``observers`` what it overrides.  ``__init__`` puts
    one function per event on the instance, so an event costs one call
    (and none to observers that ignore it); the methods below are what
    the interface declares."""

    def __init__(self, observers: Sequence[Any]) -> None:
        self.observers = tuple(observers)
        self._calls = {name: _interested(self.observers, name) for name in _EVENTS}
        for name, calls in self._calls.items():
            # Each event becomes one call: empty when nobody listens.
            setattr(self, name, _telling(name, calls) if calls else _ignore)

    def session_opened(self, record: SessionRecord) -> None:
        pass  # replaced in __init__

    def tls_started(self, record: SessionRecord) -> None:
        pass  # replaced in __init__

    def login_finished(self, record: SessionRecord, mechanism: str, result: str,
                       seconds: float) -> None:
        pass  # replaced in __init__

    def login_throttled(self, record: SessionRecord, delay: float, dropped: str | None) -> None:
        pass  # replaced in __init__

    def message_sent(self, record: SessionRecord, command: str, octets: int,
                     seconds: float) -> None:
        pass  # replaced in __init__

    def deletions_committed(self, record: SessionRecord, count: int) -> None:
        pass  # replaced in __init__

    def backend_failed(self, role: str, kind: str) -> None:
        pass  # replaced in __init__

    def connection_refused(self, limit: str, peer: str) -> None:
        pass  # replaced in __init__

    def session_closed(self, record: SessionRecord) -> None:
        pass  # replaced in __init__


def _ignore(*arguments: Any) -> None:
    pass


def _telling(name: str, calls: tuple[Callable[..., None], ...]) -> Callable[..., None]:
    """What telling ``calls`` of event ``name`` is, each guarded."""

    def failed(call: Callable[..., None]) -> None:
        log.failure("session observer {observer!r} failed in {event}",
                    observer=getattr(call, "__self__", call), event=name)

    if len(calls) == 1:
        [only] = calls

        def tell_one(*arguments: Any) -> None:
            try:
                only(*arguments)
            except Exception:
                failed(only)

        return tell_one

    def tell(*arguments: Any) -> None:
        for call in calls:
            try:
                call(*arguments)
            except Exception:
                failed(call)

    return tell


def combine_observers(observers: Sequence[Any]) -> Any:
    """One observer for ``observers``: the no-op one for none (cheapest
    to call), else a :class:`SessionObservers` (which also guards a
    single one against raising)."""
    if not observers:
        return SessionObserver()
    return SessionObservers(observers)

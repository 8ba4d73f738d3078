"""Stand-ins for a backend's ``run_blocking`` (what it hands blocking work
to: a thread pool in production), so a test decides when that work runs
and sees what ran: :class:`RecordingRunner` runs it at once,
:class:`HeldRunner` holds it until the test lets it run, as a busy pool
would."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred

__all__ = ["HeldRunner", "RecordingRunner"]


class RecordingRunner:
    """Runs each call at once, on this thread (its outcome in a fired
    Deferred), and records the function's name in :attr:`calls`: for a
    test that asserts which work needed a thread, or that none did."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
        self.calls.append(function.__name__)
        return maybeDeferred(function, *args, **kwargs)


class HeldRunner:
    """Holds each call in :attr:`pending`, unfired, until :meth:`run_next`
    or :meth:`run_all` runs it; calls ``hold`` refuses run at once.  For
    a test of what happens while work is in flight (bounded concurrency,
    a hang-up during a commit)."""

    def __init__(self, hold: Callable[[Callable[..., Any]], bool] = lambda function: True) -> None:
        self.hold = hold
        self.pending: list[tuple[Deferred[Any], Callable[[], Any]]] = []

    def __call__(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
        if not self.hold(function):
            return maybeDeferred(function, *args, **kwargs)
        d: Deferred[Any] = Deferred()
        self.pending.append((d, lambda: function(*args, **kwargs)))
        return d

    def run_next(self) -> None:
        """Run the oldest held call and fire its Deferred with the outcome
        (a failure too)."""
        if not self.pending:
            raise AssertionError("no call is held")
        d, call = self.pending.pop(0)
        maybeDeferred(call).chainDeferred(d)

    def run_all(self) -> None:
        """Run the held calls, oldest first, including those they start."""
        while self.pending:
            self.run_next()

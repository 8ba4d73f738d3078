"""A wall clock a test moves by hand, for code that takes ``clock`` as a
function returning seconds (the caches' TTLs).  Code that schedules
calls takes a ``twisted.internet.task.Clock`` instead."""

from __future__ import annotations

__all__ = ["ManualClock"]


class ManualClock:
    """``clock()`` is :attr:`now`; a test sets or advances it."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

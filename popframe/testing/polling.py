"""Waiting for something outside this process (a log line, a port, a
lock released by a server that noticed a hang-up, a row another process
wrote) by asking again until a deadline: one polling loop for every test.
A Deferred is waited for with :func:`popframe.testing.wait_for` instead,
and nothing waits by sleeping a guessed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["POLL_TIMEOUT", "wait_until"]

T = TypeVar("T")

#: Seconds a wait may take: long for a loaded CI machine, short enough that
#: a hung server fails its test instead of the whole run.
POLL_TIMEOUT = 30.0


def wait_until(condition: Callable[[], T], what: str, timeout: float = POLL_TIMEOUT,
               interval: float = 0.05, retry_on: tuple[type[BaseException], ...] = ()) -> T:
    """Call ``condition`` until it returns something true, and return that.
    An exception of a ``retry_on`` type counts as "not yet"; any other
    goes through (a condition raises to give up early, for example when
    the process it waits on has exited).  After ``timeout`` seconds:
    ``AssertionError`` naming ``what`` (and the last exception retried)."""
    deadline = time.monotonic() + timeout
    while True:
        last: BaseException | None = None
        try:
            found = condition()
            if found:
                return found
        except retry_on as error:
            last = error
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}"
                                 + (f" (last: {last!r})" if last else "")) from last
        time.sleep(interval)

"""Reading a Deferred that has already fired, with no reactor: for code
that fires at once in a test (an in-memory store, a checker given a
synchronous ``run_blocking``).  A Deferred that has not fired is a test
failure here, not a wait; :func:`popframe.testing.wait_for` waits.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.python.failure import Failure

__all__ = ["failure_of", "result_of"]

T = TypeVar("T")

_PENDING = object()


def _outcome(awaitable: Deferred[T] | Coroutine[Any, Any, T]) -> object:
    """The result or Failure the Deferred holds, taken out of it (so a
    failure read here is not logged again as unhandled when it is
    collected).  One that has not fired is left as it was."""
    outcome: object = _PENDING
    now = True

    def keep(result: object) -> object:
        nonlocal outcome
        if not now:
            return result  # fired after the check: not ours to take
        outcome = result
        return None

    ensureDeferred(awaitable).addBoth(keep)
    now = False
    if outcome is _PENDING:
        raise AssertionError(f"{awaitable!r} has not fired")
    return outcome


def result_of(awaitable: Deferred[T] | Coroutine[Any, Any, T]) -> T:
    """The result of a fired Deferred (or finished coroutine); raises the
    exception it failed with, so ``pytest.raises`` sees the real type and
    the traceback points into the code that failed."""
    outcome = _outcome(awaitable)
    if isinstance(outcome, Failure):
        outcome.raiseException()
    return outcome  # type: ignore[return-value]


def failure_of(
    awaitable: Deferred[Any] | Coroutine[Any, Any, Any], *expected: type[BaseException]
) -> Failure:
    """The :class:`Failure` of a fired Deferred, which must be one of the
    ``expected`` exception types when any are given.  A success, or another
    type, is a test failure that shows what came instead."""
    outcome = _outcome(awaitable)
    if not isinstance(outcome, Failure):
        raise AssertionError(f"expected a failure, got the result {outcome!r}")
    if expected and not outcome.check(*expected):
        names = ", ".join(t.__name__ for t in expected)
        raise AssertionError(
            f"expected {names}, got {type(outcome.value).__name__}: {outcome.getTraceback()}"
        )
    return outcome

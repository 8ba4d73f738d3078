"""Waiting for a Deferred by running the global reactor, from a plain
synchronous pytest test: what a real backend needs (a store that hands
work to threads, a checker on a connection pool), without a pytest plugin.

The reactor runs only inside :func:`wait_for`, as trial runs it: until the
Deferred fires or the timeout passes, then ``reactor.crash()`` (public
``IReactorCore``) stops the loop without the shutdown that would make it
impossible to run again.  Between two waits nothing runs behind a test's
back, so synchronous tests around these stay synchronous.  No signal
handlers are installed: Ctrl-C still reaches pytest.

The reactor's shutdown (which stops its thread pools, whose threads would
otherwise keep the interpreter from exiting) is :func:`stop_reactor`, once,
at the end of the test session; the contract suites arrange that.
"""

from __future__ import annotations

import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.error import ReactorNotRestartable
from twisted.python.failure import Failure

__all__ = ["DEFAULT_TIMEOUT", "WaitTimeout", "stop_reactor", "wait_for"]

T = TypeVar("T")

#: Seconds a wait may take: long for a loaded CI machine, short enough that
#: a hung backend fails its test instead of the whole run.
DEFAULT_TIMEOUT = 30.0

_PENDING = object()
_waiting = False


class WaitTimeout(AssertionError):
    """A Deferred did not fire within :func:`wait_for`'s timeout: a hung
    backend, a lock that waits instead of failing at once, a lost
    callback.  An ``AssertionError``: the test fails, it does not error."""


def wait_for(
    awaitable: Deferred[T] | Coroutine[Any, Any, T], timeout: float = DEFAULT_TIMEOUT
) -> T:
    """Run the global reactor until ``awaitable`` fires; return its result
    or raise its exception.  Raises :class:`WaitTimeout` (after cancelling
    the Deferred) when it has not fired after ``timeout`` seconds.

    A Deferred that has already fired is answered without touching the
    reactor.  Not from inside a running reactor (a reactor callback, a
    trial or pytest-twisted test): there, ``await`` it instead.
    """
    d = ensureDeferred(awaitable)
    outcome: object = _PENDING
    listening = True

    def keep(result: object) -> None:
        nonlocal outcome
        if listening:
            outcome = result  # after a timeout: dropped (the test has failed)

    d.addBoth(keep)
    if outcome is _PENDING:
        _run_until(d, timeout)
        listening = False
        if outcome is _PENDING:
            timed_out = WaitTimeout(f"{d!r} did not fire within {timeout} s")
            d.cancel()
            raise timed_out
    if isinstance(outcome, Failure):
        outcome.raiseException()
    return outcome  # type: ignore[return-value]


def _run_until(d: Deferred[Any], timeout: float) -> None:
    """Run the reactor until ``d`` fires or ``timeout`` passes."""
    global _waiting
    reactor = _global_reactor()
    if _waiting or reactor.running:
        raise RuntimeError("wait_for cannot run inside a running reactor: await instead")
    this_run = [True]  # a Deferred that fires late must not end a later wait

    def crash(result: object) -> object:
        if this_run[0]:
            reactor.crash()
        return result

    d.addBoth(crash)
    timer = reactor.callLater(timeout, reactor.crash)
    _waiting = True
    try:
        reactor.run(installSignalHandlers=False)
    except BaseException:  # Ctrl-C: leave the reactor able to run again, or stop
        reactor.crash()
        raise
    finally:
        this_run[0] = _waiting = False
        if timer.active():
            timer.cancel()


def stop_reactor() -> None:
    """Shut the global reactor down for good, if one is installed: the
    shutdown stops its thread pool and the pools that backends tie to it
    (``popframe.threads.ThreadPoolRunner``), whose threads would otherwise
    keep the interpreter from exiting.  Call once, at the end of the
    session (the contract suites do); no wait can follow."""
    if "twisted.internet.reactor" not in sys.modules:
        return  # never installed: no backend used it
    reactor = _global_reactor()
    if reactor.running:
        return  # someone else's loop (trial, pytest-twisted) owns the shutdown
    reactor.callWhenRunning(reactor.stop)
    try:
        reactor.run(installSignalHandlers=False)
    except ReactorNotRestartable:
        pass  # already shut down


def _global_reactor() -> Any:
    """The global reactor (installing the default one if none is), typed
    as what it is rather than as ``IReactorCore``, whose ``run`` lacks the
    ``installSignalHandlers`` every reactor's has."""
    from twisted.internet import reactor

    return reactor

"""Running the reactor for one piece of work, for the subcommands whose
store calls return Deferreds (stores hand blocking work to the reactor's
threads)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.error import ReactorNotRunning
from twisted.python.failure import Failure

__all__ = ["Interrupted", "run_reactor"]


class Interrupted(Exception):
    """The reactor stopped (SIGINT, SIGTERM) before the work was done."""


def run_reactor(work: Callable[[], defer.Deferred[Any]]) -> Any:
    """Run the reactor until ``work()`` fires; its result, or its error
    raised; :class:`Interrupted` when a signal stopped the reactor first.
    Log events of warning level and above go to standard error (stores
    log why they fail; a command shows it)."""
    from twisted.internet import reactor
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(sys.stderr), [predicate])],
        redirectStandardIO=False)
    outcome: list[Any] = []

    def stop(_: object) -> None:
        try:
            reactor.stop()
        except ReactorNotRunning:  # already stopping: a signal, while the work ended
            pass

    def start() -> None:
        d = defer.maybeDeferred(work)
        d.addBoth(outcome.append)
        d.addBoth(stop)

    reactor.callWhenRunning(start)
    reactor.run()
    if not outcome:
        raise Interrupted()
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    return outcome[0]

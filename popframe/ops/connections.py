"""The connections a process serves, so a stop can let them finish.

``SIGTERM`` stops the listeners, then :meth:`Connections.drain` waits for
the sessions in progress, at most ``--shutdown-grace`` seconds, and aborts
the rest: their ``connectionLost`` releases each maildrop without its
deletions, as for any dropped connection.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = ["ABORT_WAIT", "Connections", "TrackingFactory"]

log = Logger(namespace="popframe.ops")

#: Seconds to wait for aborted connections to report that they are gone.
ABORT_WAIT = 5.0


class Connections:
    """The open connections of every tracked listener of a process."""

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self.open: set[Any] = set()
        self._idle: list[defer.Deferred[None]] = []
        self._closing = False
        self._done: defer.Deferred[None] | None = None  # what drain returned

    def track(self, protocol: Any) -> None:
        """Count ``protocol`` open until its ``connectionLost`` returns.

        The hook goes on the instance: a wrapping protocol would put a
        layer between every protocol and its transport (and hide the
        plain TCP transport the POP3 protocol writes to directly)."""
        self.open.add(protocol)
        lost = protocol.connectionLost

        def connection_lost(reason: Failure = connectionDone) -> None:
            try:
                lost(reason)
            finally:
                self._forget(protocol)

        protocol.connectionLost = connection_lost

    def _forget(self, protocol: Any) -> None:
        self.open.discard(protocol)
        if not self.open:
            waiting, self._idle = self._idle, []
            for d in waiting:
                d.callback(None)

    def when_idle(self) -> defer.Deferred[None]:
        """Fires once no tracked connection is open."""
        if not self.open:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._idle.append(d)
        return d

    def drain(self, grace: float) -> defer.Deferred[None]:
        """Let the open connections finish for ``grace`` seconds, then abort
        the rest; fires when all are gone (or ``ABORT_WAIT`` after the
        abort, whatever the stragglers do)."""
        if not self.open:
            return defer.succeed(None)
        log.info("stopping: {count} sessions in progress get {grace:g}s to finish",
                 count=len(self.open), grace=grace)
        idle = self.when_idle()
        timer = self.clock.callLater(grace, self.close_all)
        done: defer.Deferred[None] = defer.Deferred()

        def finished(_: object) -> None:
            if timer.active():
                timer.cancel()
            if not done.called:
                done.callback(None)

        idle.addCallback(finished)
        self._done = done
        return done

    def close_all(self) -> None:
        """Abort every open connection now (the grace is over, or a second
        signal asked for it)."""
        if not self.open or self._closing:
            return
        self._closing = True
        log.warn("stopping: closing {count} sessions still in progress; their deletions "
                 "are not applied", count=len(self.open))
        for protocol in list(self.open):
            transport = getattr(protocol, "transport", None)
            abort = getattr(transport, "abortConnection", None) or getattr(
                transport, "loseConnection", None)
            if abort is not None:
                abort()
        done = self._done
        if done is not None:
            self.clock.callLater(ABORT_WAIT, _fire, done)


class TrackingFactory(Factory):
    """What a listener is given: ``factory``'s protocols, each tracked by
    ``connections`` and, given a ``listener`` name (``tcp:110``), told
    which listener it came in on (for the metrics and the logout line).
    Logs as ``factory`` does (``POP3Factory starting on 110``)."""

    noisy = False

    def __init__(self, factory: Any, connections: Connections,
                 listener: str | None = None) -> None:
        self.factory = factory
        self.connections = connections
        self.listener = listener

    def logPrefix(self) -> str:
        return str(self.factory.logPrefix())

    def doStart(self) -> None:
        self.factory.doStart()

    def doStop(self) -> None:
        self.factory.doStop()

    def buildProtocol(self, addr: Any) -> Any:
        protocol = self.factory.buildProtocol(addr)
        if protocol is not None:
            self.connections.track(protocol)
            if self.listener is not None:
                protocol.listener = self.listener
        return protocol


def _fire(d: defer.Deferred[None]) -> None:
    if not d.called:
        d.callback(None)

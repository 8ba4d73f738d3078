"""Pooled connections to the directory, with failover between its URLs.

A :class:`ConnectionPool` lends each operation a connection of its own
(:meth:`ConnectionPool.run`) and takes it back after.  New connections go
to the first URL that has not failed lately; one that fails is skipped for
:data:`RETRY_AFTER` seconds unless every URL has.  A connection the
directory dropped (a restart) leaves the pool at once, and an operation
that meets such a connection is tried once more on a new one, so the first
login after a restart succeeds.  Waiting for a free connection is bounded
by the same ``timeout`` as every network step.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from ldaptor.protocols import pureldap
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from popframe.auth.ldap.connection import BindRefused, Connection, DirectoryUnavailable, connect
from popframe.auth.ldap.settings import DirectoryURL, LDAPSettings

__all__ = ["RETRY_AFTER", "ConnectionPool"]

T = TypeVar("T")

log = Logger(namespace="popframe.auth.ldap")

#: Seconds a URL that failed is tried only after the others.
RETRY_AFTER = 30.0

#: Seconds an unused connection is kept (directories drop idle ones too:
#: OpenLDAP's idletimeout, Active Directory's MaxConnIdleTime).
IDLE_TIMEOUT = 60.0


class ConnectionPool:
    """Up to ``settings.pool_size`` connections, each bound as
    ``identity`` (a ``(dn, password)``, or None: anonymous) when made."""

    def __init__(self, settings: LDAPSettings, reactor: Any, name: str,
                 identity: tuple[str, bytes] | None = None,
                 connector: Callable[..., Deferred[Connection]] = connect,
                 failed_at: dict[DirectoryURL, float] | None = None) -> None:
        self.settings = settings
        self.reactor = reactor
        self.name = name
        self.identity = identity
        self._connect = connector
        self._idle: deque[tuple[Connection, float]] = deque()
        self._waiting: deque[Deferred[Connection]] = deque()
        self._count = 0  # connections open or being opened
        # When each URL last failed; shared by the pools of one checker.
        self._failed_at: dict[DirectoryURL, float] = {} if failed_at is None else failed_at
        self._down = False  # for logging an outage once
        self._closed = False

    def __repr__(self) -> str:
        return f"<ConnectionPool {self.name}: {self._count} open, {len(self._idle)} idle>"

    # -- lending ----------------------------------------------------------------

    def run(self, operation: Callable[[Connection], Deferred[T]]) -> Deferred[T]:
        """``operation(connection)`` on a lent connection.  Fails with
        :class:`DirectoryUnavailable` when no URL answers in time; a
        connection lost under a reused connection is retried once."""
        return self._run(operation, retry=True)

    def _run(self, operation: Callable[[Connection], Deferred[T]], retry: bool) -> Deferred[T]:
        d = self._acquire()

        def use(connection: Connection) -> Deferred[T]:
            connection.uses += 1
            result = maybeDeferred(operation, connection)

            def finished(outcome: Any) -> Any:
                if isinstance(outcome, Failure) and not connection.usable:
                    self._failed_at[connection.url] = self.reactor.seconds()
                self._release(connection)
                if (isinstance(outcome, Failure) and retry and connection.uses > 1
                        and not connection.usable
                        and isinstance(outcome.value, DirectoryUnavailable)
                        and "connection lost" in (connection.broken or "")):
                    return self._run(operation, retry=False)
                return outcome

            return result.addBoth(finished)

        return d.addCallback(use)

    def _acquire(self) -> Deferred[Connection]:
        if self._closed:
            return fail(DirectoryUnavailable(f"{self.name}: shutting down"))
        now = self.reactor.seconds()
        while self._idle:
            connection, since = self._idle.pop()  # the most recently used
            if connection.usable and now - since < IDLE_TIMEOUT:
                return succeed(connection)
            self._discard(connection)
        if self._count < self.settings.pool_size:
            return self._open()
        waiter: Deferred[Connection] = Deferred()
        self._waiting.append(waiter)
        timeout = self.settings.timeout

        def too_long() -> None:
            if waiter in self._waiting:
                self._waiting.remove(waiter)
                waiter.errback(DirectoryUnavailable(f"{self.name}: all {self.settings.pool_size} "
                                                    f"connections busy for {timeout:g} s"))

        timer = self.reactor.callLater(timeout, too_long)

        def got(connection: Connection) -> Connection:
            if timer.active():
                timer.cancel()
            return connection

        return waiter.addCallback(got)

    def _release(self, connection: Connection) -> None:
        if not connection.usable or self._closed:
            self._discard(connection)
            return
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.called:
                waiter.callback(connection)
                return
        self._idle.append((connection, self.reactor.seconds()))

    def _discard(self, connection: Connection) -> None:
        connection.close()
        self._count -= 1
        # Someone waits for a connection: make one in the freed place.
        while self._waiting and self._count < self.settings.pool_size:
            waiter = self._waiting.popleft()
            if not waiter.called:
                self._open().chainDeferred(waiter)

    # -- opening, with failover --------------------------------------------------

    def _ordered_urls(self) -> list[DirectoryURL]:
        """URLs that have not failed lately first, in the file's order."""
        now = self.reactor.seconds()
        urls = list(self.settings.urls)
        return sorted(urls, key=lambda url: now - self._failed_at.get(url, -RETRY_AFTER)
                      < RETRY_AFTER)

    def _open(self) -> Deferred[Connection]:
        self._count += 1
        urls = self._ordered_urls()
        reasons: list[str] = []

        def attempt(index: int) -> Deferred[Connection]:
            url = urls[index]
            d = self._connect(self.reactor, self.settings, url)
            if self.identity is not None:
                d.addCallback(self._bind_identity)
            elif not (url.ldaps or self.settings.starttls):
                # Nothing has answered yet (TLS would have): ask, so a
                # hung directory fails here, where the next URL is tried.
                d.addCallback(_probe)

            def failed(failure: Failure) -> Deferred[Connection]:
                failure.trap(DirectoryUnavailable)
                reason = getattr(failure.value, "reason", "")
                self._failed_at[url] = self.reactor.seconds()
                reasons.append(reason)
                if index + 1 < len(urls):
                    log.warn("LDAP {pool}: {reason}; trying {next}", pool=self.name,
                             reason=reason, next=urls[index + 1].url)
                    return attempt(index + 1)
                return fail(failure)

            return d.addErrback(failed)

        def opened(connection: Connection) -> Connection:
            self._failed_at.pop(connection.url, None)
            if self._down:
                self._down = False
                log.info("LDAP {pool}: the directory answers again ({url})", pool=self.name,
                         url=connection.url.url)
            return connection

        def gave_up(failure: Failure) -> Failure:
            self._count -= 1
            if failure.check(DirectoryUnavailable) and not self._down:
                self._down = True
                log.error("LDAP {pool}: no directory answers: {reasons}", pool=self.name,
                          reasons="; ".join(reasons))
            return failure

        return attempt(0).addCallbacks(opened, gave_up)

    def _bind_identity(self, connection: Connection) -> Deferred[Connection]:
        assert self.identity is not None
        dn, password = self.identity

        def refused(failure: Failure) -> Failure:
            connection.abort("the service bind failed")
            if failure.check(BindRefused):
                raise DirectoryUnavailable(
                    f"{connection.url.url}: the directory refuses bind_dn {dn!r}: {failure.value}")
            return failure

        return connection.bind(dn, password).addCallbacks(lambda _: connection, refused)

    def close(self) -> None:
        """Unbind every idle connection; lend no more."""
        self._closed = True
        while self._idle:
            connection, _ = self._idle.pop()
            connection.close()
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.called:
                waiter.errback(DirectoryUnavailable(f"{self.name}: shutting down"))


def _probe(connection: Connection) -> Deferred[Connection]:
    """A search of the root DSE for nothing: any answer (even "no
    entry", where anonymous reads are refused) shows the directory is up."""
    probe = connection.search("", pureldap.LDAP_SCOPE_baseObject,
                              pureldap.LDAPFilter_present("objectClass"), ())
    return probe.addCallback(lambda _: connection)

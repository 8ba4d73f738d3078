"""``GET /health`` on the ``--metrics`` listener: whether this node can
serve, for a load balancer's check (HAProxy ``option httpchk GET
/health``, examples/cluster/).

A POP3 greeting says nothing about the backends, so a node whose database
is unreachable would keep getting clients it can only answer
``[SYS/TEMP]``.  This page asks every database the store, its locker and
the checkers use for ``SELECT 1``: 200 ``ok`` when each answers within
:data:`TIMEOUT`, else 503 naming what failed.  The throttle store (Redis)
is not asked: logins fail open without it, so a node without Redis still
serves (``popframe_backend_errors_total{backend="throttle"}`` shows it).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

__all__ = ["HealthPage", "TIMEOUT", "databases_of"]

log = Logger(namespace="popframe.ops")

#: Seconds a database has to answer; keep it below the balancer's check timeout.
TIMEOUT = 2.0


def databases_of(objects: Iterable[object]) -> list[Any]:
    """The :class:`popframe.db.Database` pools these backends use (looked
    for on each, its ``locker``, the locker's ``server`` and a cache's
    wrapped ``checker``), each once."""
    from popframe.db.pool import Database

    found: dict[int, Database] = {}
    pending = list(objects)
    seen = 0
    while pending and seen < 100:  # bounded: a handful of backends
        seen += 1
        item = pending.pop()
        if isinstance(item, Database):
            found.setdefault(id(item), item)
            continue
        for name in ("database", "_database", "locker", "server", "checker"):
            value = getattr(item, name, None)
            if value is not None and value is not item:
                pending.append(value)
    return list(found.values())


class HealthPage(Resource):
    """``GET /health``: 200 ``ok``, or 503 and what failed."""

    isLeaf = True

    def __init__(self, databases: list[Any], reactor: Any) -> None:
        super().__init__()
        self.databases = databases
        self.reactor = reactor

    def check(self) -> defer.Deferred[list[str]]:
        """The problems (empty when healthy)."""
        def ask(database: Any) -> defer.Deferred[str | None]:
            d = database.run(lambda session: session.one("SELECT 1"))
            d.addTimeout(TIMEOUT, self.reactor)
            return d.addCallbacks(lambda _: None,
                                  lambda _: f"database {database.url} does not answer")

        asked = [ask(database) for database in self.databases]
        gathered = defer.gatherResults(asked)
        return gathered.addCallback(lambda results: [r for r in results if r])

    def render_GET(self, request: Request) -> Any:
        finished: list[bool] = []
        request.notifyFinish().addBoth(lambda _: finished.append(True))

        def respond(problems: list[str]) -> None:
            if finished:
                return
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            if problems:
                request.setResponseCode(503)
            request.write(("\n".join(problems) if problems else "ok").encode() + b"\n")
            request.finish()

        self.check().addCallback(respond).addErrback(
            lambda failure: log.failure("health check", failure))
        return NOT_DONE_YET

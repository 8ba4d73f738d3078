"""PostgreSQL on the reactor thread: libpq connections in non-blocking
pipeline mode (psycopg's ``pq`` layer), their sockets watched by the
reactor, statements sent as they come and answered in order.

Why, beside the pool's threads (:mod:`popframe.db.pool`): a login's lookup
and a drain's reads are single statements, and handing each to a thread
costs more than the statement (a queue put, two thread wake-ups, the GIL
passed back and forth, psycopg's cursor machinery).  Measured with
``benchmarks/sql_pools.py`` (docs/sql.md): 65-70 µs of popframe's CPU per
lookup here against 233 µs through the threads, and 2.5x the lookups/s.

- A statement is sent as ``$1``-style SQL with its parameters as text
  (the server infers their types; lists become arrays), prepared on its
  connection at first use, and its rows come in binary, loaded by
  psycopg's C loaders.
- Statements share a connection, one after another in the server with no
  round trip between them (pipeline mode); a failed statement fails alone
  (a sync after each).
- Only single statements in autocommit run here; transactions stay in
  the pool's threads.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Sequence
from typing import Any

from psycopg import pq
from psycopg.adapt import Transformer
from psycopg.pq.abc import PGconn, PGresult
from twisted.internet import defer
from twisted.python.failure import Failure

from popframe.db.pool import Rows

__all__ = ["ConnectionGone", "PipelinedConnection", "PipelinedPool", "QueryFailed", "connect"]

_OK = (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK)
_SYNC = pq.ExecStatus.PIPELINE_SYNC
_BINARY = pq.Format.BINARY
#: Statements prepared per connection; more are sent unnamed.
MAX_PREPARED = 128


class ConnectionGone(Exception):
    """The connection broke (server restart, network): every statement
    in flight on it failed; a new connection is needed."""


class QueryFailed(Exception):
    """The server refused a statement (its message); the connection is fine."""


def _text(value: Any) -> bytes | None:
    """A parameter in PostgreSQL's text form."""
    if value is None:
        return None
    if isinstance(value, bool):
        return b"t" if value else b"f"
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, int):
        return b"%d" % value
    if isinstance(value, (list, tuple)):
        if not all(isinstance(item, int) and not isinstance(item, bool) for item in value):
            raise TypeError("only lists of integers are sent as arrays")
        return ("{" + ",".join(str(item) for item in value) + "}").encode()
    raise TypeError(f"cannot send a {type(value).__name__} parameter")


class _Pending:
    """A statement sent, waiting for its answers (the PREPARE's first,
    if it was prepared with it) and the sync that ends them."""

    __slots__ = ("d", "outcome", "prepared", "preparing")

    def __init__(self, d: defer.Deferred[Rows], prepared: bytes | None) -> None:
        self.d = d
        self.outcome: Rows | Exception | None = None
        self.prepared = prepared  # a name prepared with this statement
        self.preparing = prepared is not None  # the PREPARE's answer is still to come


class PipelinedConnection:
    """An open connection: :meth:`query` from the reactor thread."""

    def __init__(self, reactor: Any, pgconn: PGconn) -> None:
        self._reactor = reactor
        self._pgconn = pgconn
        # The reactor watches a copy of libpq's socket: libpq closes its
        # own when the connection breaks, before the reactor lets go of it.
        self._fd = os.dup(pgconn.socket)
        self._pending: deque[_Pending] = deque()
        self._prepared: dict[bytes, bytes] = {}  # text -> statement name
        self._names = 0  # statement names given (never one twice)
        self._loader = Transformer()
        self._writing = False
        self.broken = False
        pgconn.nonblocking = 1
        pgconn.enter_pipeline_mode()
        reactor.addReader(self)

    # -- the public part -------------------------------------------------------------

    def query(self, text: bytes, params: Sequence[Any] = ()) -> defer.Deferred[Rows]:
        """The rows of one statement with ``$1``-style placeholders.
        Fails with :class:`QueryFailed` or :class:`ConnectionGone`."""
        if self.broken:
            return defer.fail(ConnectionGone("connection closed"))
        try:
            values = [_text(value) for value in params]
        except TypeError:
            return defer.fail()
        pgconn, prepared = self._pgconn, None
        try:
            name = self._prepared.get(text)
            if name is None and len(self._prepared) < MAX_PREPARED:
                self._names += 1
                name = prepared = b"pf%d" % self._names
                pgconn.send_prepare(name, text)
                self._prepared[text] = name
            if name is None:
                pgconn.send_query_params(text, values, result_format=_BINARY)
            else:
                pgconn.send_query_prepared(name, values, result_format=_BINARY)
            pgconn.pipeline_sync()
        except Exception as problem:  # psycopg.OperationalError: the connection is gone
            self._break(str(problem) or "connection lost")
            return defer.fail(ConnectionGone(str(problem)))
        d: defer.Deferred[Rows] = defer.Deferred()
        self._pending.append(_Pending(d, prepared))
        self._flush()
        return d

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def close(self) -> None:
        self._break("closed")
        self._pgconn.finish()

    # -- the reactor's part ----------------------------------------------------------

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return "postgresql"

    def doRead(self) -> None:
        pgconn = self._pgconn
        try:
            pgconn.consume_input()
        except Exception as problem:
            self._break(str(problem) or "connection lost")
            return
        pending = self._pending
        while pending and not pgconn.is_busy():
            result = pgconn.get_result()
            if result is None:
                continue
            status, waiting = result.status, pending[0]
            if status == _SYNC:
                pending.popleft()
                outcome = waiting.outcome
                if isinstance(outcome, Exception):
                    waiting.d.errback(Failure(outcome))
                else:
                    waiting.d.callback(outcome if outcome is not None else Rows())
            elif status in _OK:
                if waiting.preparing:  # the PREPARE's own answer
                    waiting.preparing = False
                    continue
                waiting.outcome = self._rows(result)
            elif not isinstance(waiting.outcome, Exception):  # FATAL_ERROR, PIPELINE_ABORTED
                if waiting.preparing and waiting.prepared is not None:  # the PREPARE failed
                    self._forget(waiting.prepared)
                message = result.error_message.decode("utf-8", "replace").strip()
                waiting.outcome = QueryFailed(message or pq.ExecStatus(status).name)
        if pgconn.status != pq.ConnStatus.OK:
            self._break("connection lost")

    def _rows(self, result: PGresult) -> Rows:
        rows = Rows()
        rows.columns = tuple((result.fname(i) or b"").decode() for i in range(result.nfields))
        if result.ntuples:
            loader = self._loader
            loader.set_pgresult(result, format=_BINARY)
            rows.extend(loader.load_rows(0, result.ntuples, tuple))
        return rows

    def _forget(self, name: bytes) -> None:
        for text, known in list(self._prepared.items()):
            if known == name:
                del self._prepared[text]

    def doWrite(self) -> None:
        self._flush()

    def _flush(self) -> None:
        try:
            unsent = self._pgconn.flush()
        except Exception as problem:
            self._break(str(problem) or "connection lost")
            return
        if unsent and not self._writing:
            self._writing = True
            self._reactor.addWriter(self)
        elif not unsent and self._writing:
            self._writing = False
            self._reactor.removeWriter(self)

    def connectionLost(self, reason: Failure) -> None:
        self._break("connection lost")

    def _break(self, why: str) -> None:
        if not self.broken:
            self.broken = True
            self._reactor.removeReader(self)
            if self._writing:
                self._reactor.removeWriter(self)
            os.close(self._fd)
        pending, self._pending = self._pending, deque()
        for waiting in pending:
            waiting.d.errback(Failure(ConnectionGone(why)))


class _Connecting:
    """``PQconnectPoll`` driven by the socket's readiness."""

    def __init__(self, reactor: Any, pgconn: PGconn, timeout: float) -> None:
        self._reactor = reactor
        self._pgconn = pgconn
        self._fd = -1  # a copy of libpq's socket, which may change while connecting
        self._watching: str | None = None
        self.done: defer.Deferred[PipelinedConnection] = defer.Deferred()
        self._timer = reactor.callLater(timeout, self._fail, "no answer within connect_timeout")
        self._poll(pq.PollingStatus.WRITING)

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return "postgresql-connect"

    def doRead(self) -> None:
        self._poll(self._pgconn.connect_poll())

    doWrite = doRead

    def connectionLost(self, reason: Failure) -> None:
        self._fail("connection lost")

    def _watch(self, kind: str | None) -> None:
        if self._watching == "read":
            self._reactor.removeReader(self)
        elif self._watching == "write":
            self._reactor.removeWriter(self)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if kind is not None:
            self._fd = os.dup(self._pgconn.socket)
        if kind == "read":
            self._reactor.addReader(self)
        elif kind == "write":
            self._reactor.addWriter(self)
        self._watching = kind

    def _poll(self, status: int) -> None:
        if self.done.called:
            return
        if status == pq.PollingStatus.OK:
            self._watch(None)
            self._timer.cancel()
            self.done.callback(PipelinedConnection(self._reactor, self._pgconn))
        elif status == pq.PollingStatus.READING:
            self._watch("read")
        elif status == pq.PollingStatus.WRITING:
            self._watch("write")
        else:
            self._fail(self._pgconn.get_error_message().strip() or "cannot connect")

    def _fail(self, why: str) -> None:
        if self.done.called:
            return
        self._watch(None)
        if self._timer.active():
            self._timer.cancel()
        self._pgconn.finish()
        self.done.errback(Failure(ConnectionGone(why)))


def connect(reactor: Any, conninfo: bytes, timeout: float) -> defer.Deferred[PipelinedConnection]:
    """A new connection, made without blocking the reactor (a host name
    is resolved by libpq, blocking: numeric addresses are instant)."""
    try:
        pgconn = pq.PGconn.connect_start(conninfo)
    except Exception as problem:
        return defer.fail(ConnectionGone(str(problem)))
    if pgconn.status == pq.ConnStatus.BAD:
        why = pgconn.get_error_message().strip() or "cannot connect"
        pgconn.finish()
        return defer.fail(ConnectionGone(why))
    return _Connecting(reactor, pgconn, timeout).done


class PipelinedPool:
    """Up to ``size`` connections made by ``connect`` as statements need
    them; a statement goes to an idle connection, else to a new one while
    there may be more, else to the one with the fewest in flight.  A
    broken connection is dropped; the next statement makes a new one."""

    def __init__(self, connect: Any, size: int) -> None:
        self._connect = connect  # () -> Deferred[PipelinedConnection]
        self.size = size
        self._open: list[PipelinedConnection] = []
        self._coming: list[list[defer.Deferred[PipelinedConnection]]] = []  # waiters of each

    def query(self, text: bytes, params: Sequence[Any] = ()) -> defer.Deferred[Rows]:
        open_ = self._open
        if any(connection.broken for connection in open_):
            open_[:] = [connection for connection in open_ if not connection.broken]
        best: PipelinedConnection | None = None
        for connection in open_:
            if best is None or connection.in_flight < best.in_flight:
                best = connection
        full = len(open_) + len(self._coming) >= self.size
        if best is not None and (best.in_flight == 0 or full):
            return best.query(text, params)
        waiting: defer.Deferred[PipelinedConnection] = defer.Deferred()
        if full and self._coming:
            self._coming[0].append(waiting)
        else:
            self._new(waiting)
        return waiting.addCallback(lambda connection: connection.query(text, params))

    def _new(self, first: defer.Deferred[PipelinedConnection]) -> None:
        waiters = [first]

        def done(result: PipelinedConnection | Failure) -> None:
            self._coming.remove(waiters)
            if not isinstance(result, Failure):
                self._open.append(result)
            for waiting in waiters:
                if isinstance(result, Failure):
                    waiting.errback(result)
                else:
                    waiting.callback(result)

        self._coming.append(waiters)
        self._connect().addBoth(done)

    def close(self) -> None:
        open_, self._open = self._open, []
        for connection in open_:
            connection.close()

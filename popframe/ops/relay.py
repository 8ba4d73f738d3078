"""One view of the metrics across ``--workers``: each worker counts in its
own memory (:class:`~popframe.ops.metrics.MetricsRecorder`); at each
scrape the parent asks every worker for a snapshot and sums them.

Why not prometheus_client's multiprocess mode: every counter update there
is a locked write into a memory-mapped file, 1-2 µs instead of 0.1 µs
here, on every login and every RETR; asking at scrape time costs the
workers nothing between scrapes.  See docs/operations.md for the numbers.

The wire: the parent writes one ``m`` octet on the worker's lifeline pipe
(its standard input, see :mod:`popframe.workers.contract`); the worker
answers one JSON line (:func:`popframe.ops.metrics.to_json`) on its
metrics pipe.  A scrape waits for every running worker's answer, at most
``timeout`` seconds (then a stopped worker's last snapshot stands in).  A
worker also sends a snapshot as it stops, and the counters of a worker
that died are kept (:func:`~popframe.ops.metrics.retire`), so totals do
not go back when a worker is restarted.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from popframe.ops.metrics import (
    MetricsRecorder,
    Snapshot,
    from_json,
    merge_snapshots,
    retire,
    to_json,
)

__all__ = ["REQUEST", "WorkerMetrics", "answer_requests"]

log = Logger(namespace="popframe.ops")

#: What the parent writes to ask a worker for a snapshot.
REQUEST = b"m"
_MAX_LINE = 16 << 20


class WorkerMetrics:
    """The parent's side: the latest snapshot of each worker, and the
    retired counters of dead ones.  ``ask(worker_id) -> bool`` sends a
    request (False: that worker cannot be asked)."""

    def __init__(self, clock: Any, ask: Callable[[int], bool] | None = None,
                 timeout: float = 1.0) -> None:
        self.clock = clock
        self.ask = ask
        self.timeout = timeout
        self.latest: dict[int, Snapshot] = {}
        self.retired: Snapshot = {}
        self.restarts = 0
        self._partial: dict[int, bytes] = {}
        self._waiting: list[tuple[set[int], Deferred[Snapshot], Any]] = []

    def total(self) -> Snapshot:
        return merge_snapshots([self.retired, *self.latest.values()])

    def server_values(self) -> dict[str, float]:
        return {"popframe_worker_restarts_total": self.restarts}

    def gather_from(self, workers: Iterable[int]) -> Deferred[Snapshot]:
        """Ask ``workers`` and fire with the sum once all answered (or
        after ``timeout``)."""
        asked = {w for w in workers if self.ask is not None and self.ask(w)}
        d: Deferred[Snapshot] = Deferred()
        if not asked:
            d.callback(self.total())
            return d
        timer = self.clock.callLater(self.timeout, self._expire, d)
        self._waiting.append((asked, d, timer))
        return d

    def _expire(self, d: Deferred[Snapshot]) -> None:
        for waiting in list(self._waiting):
            if waiting[1] is d:
                self._waiting.remove(waiting)
                log.warn("metrics: workers {workers} did not answer within {timeout:g} s; "
                         "their last values are shown", workers=sorted(waiting[0]),
                         timeout=self.timeout)
                d.callback(self.total())

    def _answered(self, worker: int) -> None:
        for waiting in list(self._waiting):
            pending, d, timer = waiting
            pending.discard(worker)
            if not pending:
                self._waiting.remove(waiting)
                if timer is not None and timer.active():
                    timer.cancel()
                d.callback(self.total())

    def received(self, worker: int, data: bytes) -> None:
        """Octets from ``worker``'s metrics pipe."""
        lines = (self._partial.pop(worker, b"") + data).split(b"\n")
        rest = lines.pop()
        if rest and len(rest) < _MAX_LINE:
            self._partial[worker] = rest
        for line in lines:
            if not line.strip():
                continue
            try:
                self.latest[worker] = from_json(json.loads(line))
            except (ValueError, TypeError, AttributeError):
                log.warn("metrics: worker-{worker} sent a line that is not a snapshot",
                         worker=worker)
                continue
            self._answered(worker)

    def ended(self, worker: int, restarting: bool) -> None:
        """``worker`` exited; keep its counters.  ``restarting``: it died
        while the pool runs (counted as a restart)."""
        self._partial.pop(worker, None)
        last = self.latest.pop(worker, None)
        if last is not None:
            self.retired = merge_snapshots([self.retired, retire(last)])
        if restarting:
            self.restarts += 1
        self._answered(worker)


class _WorkerSource:
    """The parent's :class:`~popframe.ops.exposition.MetricsSource`."""

    def __init__(self, metrics: WorkerMetrics, running: Callable[[], Iterable[int]]) -> None:
        self.metrics = metrics
        self.running = running

    def gather(self) -> Deferred[Snapshot]:
        return self.metrics.gather_from(self.running())

    def server_values(self) -> dict[str, float]:
        return self.metrics.server_values()


def worker_source(metrics: WorkerMetrics, running: Callable[[], Iterable[int]]) -> _WorkerSource:
    """What the parent's metrics page gathers from: ``running()`` names
    the workers to ask."""
    return _WorkerSource(metrics, running)


def answer_requests(recorder: MetricsRecorder, fd: int) -> tuple[Callable[[bytes], None],
                                                                 Callable[[], None]]:
    """The worker's side: a callable for what the lifeline pipe brings
    (each ``m`` asks for a snapshot, written as one line on ``fd``), and
    one that sends a last snapshot as the worker stops."""

    def send() -> None:
        line = (json.dumps(to_json(recorder.snapshot()), separators=(",", ":")) + "\n").encode()
        view = memoryview(line)
        try:
            while view:
                view = view[os.write(fd, view):]
        except OSError:  # the parent is gone
            pass

    def requests(data: bytes) -> None:
        if REQUEST in data:
            send()

    return requests, send

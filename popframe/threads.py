"""Blocking calls off the reactor thread, in pools of their own."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.python.failure import Failure

__all__ = ["ThreadPoolRunner"]

T = TypeVar("T")

_Task = tuple[Callable[..., Any], tuple[Any, ...], defer.Deferred[Any]]


class ThreadPoolRunner:
    """``runner(function, *args) -> Deferred``: runs in ``size`` threads of
    its own, so slow work (argon2 hashes, a Redis timeout, a database
    call) never queues in front of the reactor's shared pool (DNS
    lookups) or another backend's.

    The threads are fed by one ``queue.SimpleQueue``, not Twisted's
    ``ThreadPool``, which coordinates each task through a team of lock
    workers and a ``Condition``: profiling a login showed its ``notify``
    as a tenth to a fifth of the reactor thread's own time; a C queue's
    ``put`` is one lock release.  The threads are daemons, started at the
    first call and stopped (after the work queued) at the reactor's shutdown.
    """

    def __init__(self, name: str, size: int, reactor: Any = None) -> None:
        self.name = name
        self.size = size
        self._reactor = reactor
        self._queue: queue.SimpleQueue[_Task | None] = queue.SimpleQueue()
        self._started = False
        self._threads: list[threading.Thread] = []

    def __call__(self, function: Callable[..., T], *args: Any) -> defer.Deferred[T]:
        if not self._started:
            self._start()
        d: defer.Deferred[T] = defer.Deferred()
        self._queue.put((function, args, d))
        return d

    def _start(self) -> None:
        self._started = True
        if self._reactor is None:
            from twisted.internet import reactor  # not at import: twistd picks it later

            self._reactor = reactor
        self._threads = [threading.Thread(target=self._work, name=f"{self.name}-{n}", daemon=True)
                         for n in range(self.size)]
        for thread in self._threads:
            thread.start()
        self._reactor.addSystemEventTrigger("during", "shutdown", self.stop)

    def stop(self) -> None:
        """After the work already queued: the threads end, and are joined."""
        for _ in self._threads:
            self._queue.put(None)
        threads, self._threads = self._threads, []
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join()
        self._started = False

    def _work(self) -> None:
        call_back = self._reactor.callFromThread
        while (task := self._queue.get()) is not None:
            function, args, d = task
            try:
                result = function(*args)
            except BaseException:
                call_back(d.errback, Failure())
            else:
                call_back(d.callback, result)

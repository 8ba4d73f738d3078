"""Blocking calls off the reactor thread, in pools of their own."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

__all__ = ["ThreadPoolRunner"]

T = TypeVar("T")


class ThreadPoolRunner:
    """``runner(function, *args) -> Deferred``: runs in a pool of ``size``
    threads of its own, started on first use and stopped with the reactor,
    so slow work (argon2 hashes, a Redis timeout) never queues in front of
    the reactor's shared pool (DNS lookups, store calls)."""

    def __init__(self, name: str, size: int, reactor: Any = None) -> None:
        self.name = name
        self.size = size
        self._reactor = reactor
        self._pool: ThreadPool | None = None

    def __call__(self, function: Callable[..., T], *args: Any) -> Deferred[T]:
        return deferToThreadPool(self._get_reactor(), self._get_pool(), function, *args)

    def _get_reactor(self) -> Any:
        if self._reactor is None:
            from twisted.internet import reactor  # not at import: twistd picks it later

            self._reactor = reactor
        return self._reactor

    def _get_pool(self) -> ThreadPool:
        if self._pool is None:
            self._pool = ThreadPool(minthreads=0, maxthreads=self.size, name=self.name)
            self._pool.start()
            self._get_reactor().addSystemEventTrigger("during", "shutdown", self._pool.stop)
        return self._pool

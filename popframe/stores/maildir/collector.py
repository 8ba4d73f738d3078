"""A process-wide pause of the cyclic garbage collector while a listing is
made (see :class:`CollectorPause`)."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class CollectorPause:
    """Pauses the cyclic garbage collector while a listing is made from
    the size cache: its 100,000 tuples set off ~140 young collections and
    a full one, and none can find anything, since those tuples hold only
    strings and numbers.  The pause is process-wide, so it is counted: the last of
    overlapping loads resumes collection, and only if it was running.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0
        self._resume = False

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._count == 0:
                self._resume = gc.isenabled()
                gc.disable()
            self._count += 1
        try:
            yield
        finally:
            with self._lock:
                self._count -= 1
                if self._count == 0 and self._resume:
                    gc.enable()


collector_paused = CollectorPause()

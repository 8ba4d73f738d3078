"""What every contract suite shares: waiting for a backend's Deferreds with
a deadline, and the reactor shut down once the session is over."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import TypeVar

import pytest
from twisted.internet.defer import Deferred

from popframe.testing.reactor import DEFAULT_TIMEOUT, stop_reactor, wait_for

T = TypeVar("T")


class Contract:
    """The waiting every suite does.  ``timeout``: the seconds any one call
    into the backend may take before its test fails (raise it for a slow
    remote backend)."""

    timeout: float = DEFAULT_TIMEOUT

    @pytest.fixture(scope="session", autouse=True)
    @classmethod
    def _reactor_stopped_after_the_session(cls) -> Iterator[None]:
        """Backends' thread pools stop with the reactor; without this their
        threads would keep the test process from exiting."""
        yield
        stop_reactor()

    def wait(self, d: Deferred[T]) -> T:
        """The result of a backend call, which must be a Deferred (the
        server chains callbacks on it), waited for at most ``timeout``
        seconds while the reactor runs; raises what it failed with."""
        assert isinstance(d, Deferred), f"expected a Deferred, the backend returned {d!r}"
        return wait_for(d, self.timeout)

    def settle(self, result: object) -> object:
        """What one of the author's hooks returned: a Deferred or coroutine
        is waited for, anything else taken as done."""
        if isinstance(result, Deferred) or inspect.iscoroutine(result):
            return wait_for(result, self.timeout)
        return result

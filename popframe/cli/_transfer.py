"""What ``popframe import`` and ``popframe migrate`` share: the copy loop
(each message not yet done, in order, noted once the store has it), the
progress bar on a terminal, and a clean stop on SIGINT/SIGTERM after the
message under way.  Which messages are done is each command's own: the
import's journal, the migration's target UIDLs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass
from typing import IO, Any

from twisted.internet import defer

from popframe.cli.errors import CLIError

__all__ = ["Message", "Pending", "Progress", "StopRequest", "copy_messages", "rate"]


@dataclass(frozen=True)
class Message:
    """One message of the source: its key (what notes it done) and its octets."""

    key: str
    octets: bytes
    #: The octets of the source it stood for (its share of the file, for progress).
    source_octets: int


@dataclass(frozen=True)
class Pending:
    """A message whose octets are read only if it is to be copied."""

    key: str
    source_octets: int
    load: Callable[[], defer.Deferred[Message]]


class StopRequest:
    """A signal asked the copy to stop: it finishes the message under way
    (and notes it) first; :meth:`request` is the reactor's before-shutdown
    trigger, and its Deferred holds the shutdown until then."""

    def __init__(self) -> None:
        self.requested = False
        self._stopped: list[defer.Deferred[None]] = []
        self.done = False

    def request(self) -> defer.Deferred[None] | None:
        if self.done:  # the reactor stops because the copy ended
            return None
        self.requested = True
        d: defer.Deferred[None] = defer.Deferred()
        self._stopped.append(d)
        return d

    def finished(self) -> None:
        self.done = True
        waiting, self._stopped = self._stopped, []
        for d in waiting:
            d.callback(None)


class Progress:
    """A progress bar on ``stream`` (None: silent), by octets of the source."""

    WIDTH = 30

    def __init__(self, stream: IO[str] | None, total: int, clock: Any = time.monotonic) -> None:
        self.stream = stream
        self.total = max(total, 1)
        self.clock = clock
        self.started = clock()
        self.octets = 0  # of the source, copied or skipped
        self.messages = 0  # copied
        self.imported_octets = 0
        self.skipped = 0
        self._shown = 0.0
        self._drawn = False

    def advance(self, message: Message | Pending, imported: bool) -> None:
        self.octets += message.source_octets
        if imported:
            assert isinstance(message, Message)
            self.messages += 1
            self.imported_octets += len(message.octets)
        else:
            self.skipped += 1
        now = self.clock()
        if self.stream is not None and now - self._shown >= 0.1:
            self._shown = now
            self.draw(now)

    def line(self, now: float) -> str:
        fraction = min(self.octets / self.total, 1.0)
        filled = int(fraction * self.WIDTH)
        elapsed = max(now - self.started, 1e-9)
        rate = self.messages / elapsed
        octet_rate = self.octets / elapsed
        left = (self.total - self.octets) / octet_rate if octet_rate > 0 else None
        eta = _clock_time(left) if left is not None else "--:--"
        return (f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {fraction * 100:5.1f}% "
                f"{self.messages} messages, {rate:.0f}/s, {eta} left")

    def draw(self, now: float) -> None:
        assert self.stream is not None
        self.stream.write("\r" + self.line(now) + "\033[K")
        self.stream.flush()
        self._drawn = True

    def end(self) -> None:
        if self.stream is not None and self._drawn:
            self.draw(self.clock())
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def _clock_time(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    hours, rest = divmod(seconds, 3600)
    return (f"{hours}:" if hours else "") + f"{rest // 60:02d}:{rest % 60:02d}"


def rate(progress: Progress) -> str:
    """``in S s (R messages/s)``, for a summary."""
    elapsed = max(progress.clock() - progress.started, 1e-9)
    return f"in {elapsed:.1f} s ({progress.messages / elapsed:.0f} messages/s)"


@defer.inlineCallbacks
def copy_messages(messages: Iterator[Message | Pending], done: Container[str],
                  put: Callable[[Message], defer.Deferred[Any]], noted: Callable[[str], None],
                  progress: Progress, stop: StopRequest | None = None, *,
                  user: str, verb: str = "imported") -> Any:
    """``put`` each message whose key is not ``done``, in order, then note
    its key.  Fires with ``progress``; a store's refusal stops the copy
    (CLIError), and so does ``stop`` (between two messages)."""
    from popframe.errors import POP3Error

    stop = stop if stop is not None else StopRequest()
    try:
        for item in messages:
            if stop.requested:
                break
            if item.key in done:
                progress.advance(item, imported=False)
                continue
            message = item if isinstance(item, Message) else (yield item.load())
            try:
                yield put(message)
            except POP3Error as error:
                raise CLIError(f"{user}: the store refused message {progress.messages + 1} "
                               f"({error.message}); {progress.messages} were {verb}, run "
                               "the same command again to go on") from None
            noted(message.key)
            progress.advance(message, imported=True)
    finally:
        stop.finished()
    return progress

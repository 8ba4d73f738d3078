"""The log relay between a worker and its parent.

A worker logs its events on a pipe (``LOG_FD``), one line each; the parent
re-publishes each with ``worker-ID`` at the front of its system field
(``[worker-2 popframe.server#info] login ok ...``), wherever twistd's log
goes.  What a worker writes on its standard output and error (a crash's
traceback, a print) is logged line by line, with the same system.

An event line is :func:`relayed_event`'s lean JSON: the text rendered
in the worker, the plain fields beside it, a failure as its traceback.
It costs both sides a fraction of Twisted's ``eventAsJSON`` /
``eventFromJSON`` (issue 11: relaying a session's two log lines took a
twentieth of its CPU), and unlike them keeps a failure's message.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import IO, Any

from twisted.logger import (
    ILogObserver,
    Logger,
    LogLevel,
    formatEvent,
    globalLogPublisher,
)
from zope.interface import implementer

from popframe.ops.logformat import event_fields, traceback_text
from popframe.workers.contract import LOG_FD

log = Logger(namespace="popframe.workers")

_MAX_LINE = 1 << 20  # a longer unterminated worker log line is logged in pieces
#: The first octet of an event line.
LEAN = "\x1f"
_LEVELS = {level.name: level for level in LogLevel.iterconstants()}


def start_logging(fd: int = LOG_FD) -> None:
    """In a worker: send every log event to the parent, one line each on ``fd``."""
    from twisted.logger import globalLogBeginner

    stream = os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace")
    globalLogBeginner.beginLoggingTo([RelayObserver(stream)], redirectStandardIO=False)


def relayed_event(event: dict[str, Any]) -> str:
    """An event as one lean line: the text formatted here (``log_text``;
    its fields need not survive JSON), the level by name, a failure's
    traceback (``log_traceback``), and every plain field for the
    parent's observers (its JSON log lines show them; not the keys of a
    ``twisted.python.log`` event, whose text is in ``log_text``)."""
    line = event_fields(event)
    level = event.get("log_level")
    line["log_level"] = getattr(level, "name", None)
    line["log_namespace"] = event.get("log_namespace")
    line["log_time"] = event.get("log_time")
    system = event.get("log_system")
    if isinstance(system, str):
        line["log_system"] = system
    line["log_text"] = formatEvent(event)
    failure = event.get("log_failure")
    if failure is not None:
        line["log_traceback"] = traceback_text(failure)
    return LEAN + json.dumps(line, default=str) + "\n"


def event_from_relay(line: str) -> dict[str, Any]:
    """The event :func:`relayed_event` wrote (``line`` without LEAN)."""
    event = json.loads(line)
    if not isinstance(event, dict) or not isinstance(event.get("log_text"), str):
        raise ValueError("not an event")
    event["log_level"] = _LEVELS.get(event.get("log_level"), LogLevel.info)
    event["log_format"] = "{log_text}"
    traceback = event.pop("log_traceback", None)
    if isinstance(traceback, str):
        event["log_failure"] = RelayedFailure(traceback)
    return event


class RelayedFailure:
    """A worker's failure, in the parent: what log observers ask of a
    ``Failure`` (its traceback), as the worker formatted it."""

    def __init__(self, traceback: str) -> None:
        self._traceback = traceback

    def getTraceback(self, *args: Any, **kwargs: Any) -> str:  # noqa: N802 (Failure's name)
        return self._traceback

    def __repr__(self) -> str:
        last = self._traceback.strip().rpartition("\n")[2]
        return f"<RelayedFailure {last}>"


@implementer(ILogObserver)
class RelayObserver:
    """A worker's one log observer: each event one line on ``stream``,
    written at once (a worker that dies loses no line it logged)."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def __call__(self, event: dict[str, Any]) -> None:
        self.stream.write(relayed_event(event))
        self.stream.flush()


class LogRelay:
    """In the parent: the output of worker ``worker_id``, one descriptor
    at a time, split into lines and logged."""

    def __init__(self, worker_id: int,
                 on_event: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.worker_id = worker_id
        #: Called with each log event of the worker (the pool watches for
        #: ``popframe_ready`` and ``popframe_reload``).
        self.on_event = on_event
        self.pid: int | None = None  # the worker's process, once spawned
        self._partial: dict[int, bytes] = {}

    def data_received(self, fd: int, data: bytes) -> None:
        lines = (self._partial.pop(fd, b"") + data).split(b"\n")
        rest = lines.pop()
        if len(rest) > _MAX_LINE:
            lines.append(rest)
        elif rest:
            self._partial[fd] = rest
        for line in lines:
            self._line(fd, line)

    def connection_lost(self, fd: int) -> None:
        rest = self._partial.pop(fd, b"")
        if rest:
            self._line(fd, rest)

    def _line(self, fd: int, line: bytes) -> None:
        system = f"worker-{self.worker_id}"
        if fd == LOG_FD and line[:1] == LEAN.encode():
            try:
                event = event_from_relay(line[1:].decode("utf-8"))
            except ValueError:  # UnicodeDecodeError and JSONDecodeError too
                pass
            else:
                self._publish(event, system)
                return
        text = line.decode("utf-8", "replace").rstrip("\r")
        if text.strip():
            # Output that is not a log event (a crash's traceback, a print).
            level = log.warn if fd == 2 else log.info
            level("{line}", line=text, log_system=system, popframe_worker=self.worker_id)

    def _publish(self, event: dict[str, Any], system: str) -> None:
        original = event.get("log_system")
        if original is None:  # what the text formatter would have shown
            level = event.get("log_level")
            original = f"{event.get('log_namespace', '-')}#{getattr(level, 'name', level)}"
        event["log_system"] = system if original == "-" else f"{system} {original}"
        event["popframe_worker"] = self.worker_id
        event["popframe_worker_pid"] = self.pid
        globalLogPublisher(event)
        if self.on_event is not None:
            self.on_event(event)

"""The log relay between a worker and its parent.

A worker logs JSON events on a pipe (``LOG_FD``); the parent re-publishes
each with ``worker-ID`` at the front of its system field (``[worker-2
popframe.server#info] login ok ...``), wherever twistd's log goes.  What a
worker writes on its standard output and error (a crash's traceback, a
print) is logged line by line, with the same system.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger, eventFromJSON, globalLogPublisher

from popframe.workers.contract import LOG_FD

log = Logger(namespace="popframe.workers")

_MAX_LINE = 1 << 20  # a longer unterminated worker log line is logged in pieces


def start_logging(fd: int = LOG_FD) -> None:
    """In a worker: send every log event to the parent, as JSON on ``fd``."""
    from twisted.logger import globalLogBeginner, jsonFileLogObserver

    stream = os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace")
    globalLogBeginner.beginLoggingTo([jsonFileLogObserver(stream)], redirectStandardIO=False)


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
        if fd == LOG_FD:
            try:
                event = eventFromJSON(line.lstrip(b"\x1e").decode("utf-8"))
            except (ValueError, UnicodeDecodeError):
                pass
            else:
                if isinstance(event, dict) and "log_format" in event:
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

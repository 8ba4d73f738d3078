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

When the parent's log is text alone (twistd's ``--logfile`` or standard
output, not ``--log-format json``), its fields are never written, so the
parent starts its workers with ``text_only``: an ordinary event is then a
:func:`relayed_text` line, its time, level, namespace, system and text,
which the parent writes to the log's file directly, the lines of one
read together (:attr:`LogRelay.text_logs`; issue 18: the relay had been
a quarter of the server's CPU in a ``check``).
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
    globalLogPublisher,
)
from zope.interface import implementer

from popframe.ops.logformat import event_fields, event_text, traceback_text
from popframe.twisted_internals import classic_line, classic_system
from popframe.workers.contract import LOG_FD

log = Logger(namespace="popframe.workers")

_MAX_LINE = 1 << 20  # a longer unterminated worker log line is logged in pieces
#: The first octet of an event line.
LEAN = "\x1f"
#: The first octet of a text line (:func:`relayed_text`).
TEXT = "\x1e"
#: Fields the parent acts on (the pool: a worker is ready, a reload is
#: done): an event with one always goes whole.
PARENT_FIELDS = ("popframe_ready", "popframe_reload")
_LEVELS = {level.name: level for level in LogLevel.iterconstants()}


def start_logging(fd: int = LOG_FD, *, text_only: bool = False) -> None:
    """In a worker: send every log event to the parent, one line each on
    ``fd``; ``text_only``: the parent writes text alone."""
    from twisted.logger import globalLogBeginner

    stream = os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace")
    globalLogBeginner.beginLoggingTo([RelayObserver(stream, text_only=text_only)],
                                     redirectStandardIO=False)


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
    line["log_text"] = event_text(event)
    failure = event.get("log_failure")
    if failure is not None:
        line["log_traceback"] = traceback_text(failure)
    return LEAN + json.dumps(line, default=str) + "\n"


def relayed_text(event: dict[str, Any]) -> str | None:
    """An event as a text log shows it: its time, level, namespace, system
    and text (formatted here), tab-separated on one line; None for an
    event that goes whole (:func:`relayed_event`): a failure, a field of
    :data:`PARENT_FIELDS`, text of several lines."""
    if "log_failure" in event or any(key in event for key in PARENT_FIELDS):
        return None
    level = event.get("log_level")
    system = event.get("log_system")
    head = (f"{event.get('log_time')!r}\t{getattr(level, 'name', '')}\t"
            f"{event.get('log_namespace') or ''}\t{system if isinstance(system, str) else ''}")
    text = event_text(event)
    if head.count("\t") != 3 or "\n" in head or "\n" in text:
        return None
    return f"{TEXT}{head}\t{text}\n"


def event_from_text(line: str) -> dict[str, Any]:
    """The event :func:`relayed_text` wrote (``line`` without TEXT)."""
    when, level, namespace, system, text = line.split("\t", 4)
    return {"log_time": None if when == "None" else float(when),
            "log_level": _LEVELS.get(level, LogLevel.info),
            "log_namespace": namespace or None, "log_system": system or None,
            "log_format": "{log_text}", "log_text": text}


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
    written at once (a worker that dies loses no line it logged);
    ``text_only``: a :func:`relayed_text` line where one can be."""

    def __init__(self, stream: IO[str], *, text_only: bool = False) -> None:
        self.stream = stream
        self.text_only = text_only

    def __call__(self, event: dict[str, Any]) -> None:
        line = relayed_text(event) if self.text_only else None
        self.stream.write(line or relayed_event(event))
        self.stream.flush()


class LogRelay:
    """In the parent: the output of worker ``worker_id``, one descriptor
    at a time, split into lines and logged."""

    def __init__(self, worker_id: int,
                 on_event: Callable[[dict[str, Any]], None] | None = None,
                 text_logs: list[tuple[Any, Callable[[float | None], str]]] | None = None
                 ) -> None:
        self.worker_id = worker_id
        self.system = f"worker-{worker_id}"  # before each line's own system
        #: Called with each log event of the worker that came whole (the
        #: pool watches for :data:`PARENT_FIELDS`).
        self.on_event = on_event
        #: The text logs' files and time formatters
        #: (``twisted_internals.text_log_files``) a text line is written
        #: to directly; None: it is published as an event.
        self.text_logs = text_logs
        self.pid: int | None = None  # the worker's process, once spawned
        self._partial: dict[int, bytes] = {}
        self._held: list[tuple[float | None, str, str]] = []  # text lines not written yet

    def data_received(self, fd: int, data: bytes) -> None:
        lines = (self._partial.pop(fd, b"") + data).split(b"\n")
        rest = lines.pop()
        if len(rest) > _MAX_LINE:
            lines.append(rest)
        elif rest:
            self._partial[fd] = rest
        for line in lines:
            self._line(fd, line)
        self._write_held()

    def connection_lost(self, fd: int) -> None:
        rest = self._partial.pop(fd, b"")
        if rest:
            self._line(fd, rest)
        self._write_held()

    def _line(self, fd: int, line: bytes) -> None:
        read = _READERS.get(line[:1]) if fd == LOG_FD else None
        if read is not None:
            try:
                event = read(line[1:].decode("utf-8"))
            except ValueError:  # UnicodeDecodeError and JSONDecodeError too
                pass
            else:
                if read is event_from_text and self.text_logs is not None:
                    if event["log_text"]:
                        self._held.append((event["log_time"], self._system(event),
                                           event["log_text"]))
                else:
                    self._publish(event)
                return
        self._write_held()  # in order, before this line
        text = line.decode("utf-8", "replace").rstrip("\r")
        if text.strip():
            # Output that is not a log event (a crash's traceback, a print).
            level = log.warn if fd == 2 else log.info
            level("{line}", line=text, log_system=self.system, popframe_worker=self.worker_id)

    def _system(self, event: dict[str, Any]) -> str:
        """The worker before the event's own system (or what the text
        formatter would have shown for it)."""
        original = event.get("log_system")
        if original is None:
            original = classic_system(event)
        return self.system if original == "-" else f"{self.system} {original}"

    def _write_held(self) -> None:
        """The text lines read so far, in one write to each text log."""
        if not self._held or self.text_logs is None:
            return
        held, self._held = self._held, []
        for file, format_time in self.text_logs:
            try:
                file.write("".join(classic_line(format_time(when), system, text)
                                   for when, system, text in held))
                file.flush()
            except Exception:  # as the publisher does with an observer that fails
                log.failure("writing worker-{id}'s log lines failed", id=self.worker_id)

    def _publish(self, event: dict[str, Any]) -> None:
        self._write_held()  # in order, before this event
        event["log_system"] = self._system(event)
        event["popframe_worker"] = self.worker_id
        event["popframe_worker_pid"] = self.pid
        globalLogPublisher(event)
        if self.on_event is not None:
            self.on_event(event)


#: How the parent reads a line of the worker's log, by its first octet.
_READERS: dict[bytes, Callable[[str], dict[str, Any]]] = {
    LEAN.encode(): event_from_relay, TEXT.encode(): event_from_text}

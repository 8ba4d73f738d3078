"""JSON log lines, for log collectors (journald, Loki, Elasticsearch).

Two ways to ask for them, both the same lines:

- ``twistd pop3 --log-format json``: JSON where twistd would have written
  text (standard output under ``-n``, or ``--logfile``);
- twistd's own convention, ``twistd --logger popframe.ops.logformat.json_stdout``.

Each event is one line: ``time`` (ISO 8601, UTC), ``level``, ``system``
(the worker and namespace, as text logs show them), ``message`` (the text
line), then the event's own fields (``user``, ``peer``, ``end``, ... of
the logout line), and ``traceback`` for a failure.  Twisted's ``log_*``
keys, fields that are not plain values, and the ``*_text`` fields that
only exist to print a value in the text line are left out.
"""

from __future__ import annotations

import datetime
import json
import sys
from collections.abc import Callable
from typing import IO, Any

from twisted.logger import ILogObserver, formatEvent
from zope.interface import implementer

__all__ = ["JSONLogObserver", "event_as_json", "event_fields", "event_text", "json_log_observer",
           "json_stdout", "log_to_json", "made_text", "traceback_text"]

_PLAIN = (str, int, float, bool, type(None))
# Keys of legacy (twisted.python.log) events that are not fields.
_LEGACY = frozenset({"message", "system", "time", "isError", "format", "why", "failure",
                     "printed"})


def event_fields(event: dict[str, Any]) -> dict[str, Any]:
    """An event's own fields that are plain values (``user``, ``peer``,
    ``end``, ...): not Twisted's ``log_*`` keys, nor a legacy event's."""
    return {key: value for key, value in event.items()
            if isinstance(value, _PLAIN) and not key.startswith("log_") and key not in _LEGACY}


def made_text(event: dict[str, Any]) -> str | None:
    """The text of an event whose format only names a field holding text
    (``"{login_text}"``: a line popframe made itself, or a worker's line
    in its parent), which needs no ``str.format`` pass; else None."""
    form = event.get("log_format")
    if (type(form) is str and form[:1] == "{" and form[-1:] == "}"
            and form[1:-1].isidentifier() and "log_flattened" not in event):
        text = event.get(form[1:-1])
        if type(text) is str:
            return text
    return None


def event_text(event: dict[str, Any]) -> str:
    """``formatEvent(event)``, without a ``str.format`` pass for a made
    text (:func:`made_text`: that pass was a twentieth of a worker's CPU
    in a ``check``)."""
    text = made_text(event)
    return formatEvent(event) if text is None else text


def traceback_text(failure: Any) -> str:
    """A logged failure's traceback, or what it is when it has none."""
    try:
        return str(failure.getTraceback())
    except Exception:
        return repr(failure)


def event_as_json(event: dict[str, Any]) -> str:
    """One log event as one line of JSON (no line end)."""
    level = event.get("log_level")
    when = event.get("log_time")
    line: dict[str, Any] = {
        "time": (datetime.datetime.fromtimestamp(when, datetime.UTC).isoformat(
            timespec="milliseconds") if isinstance(when, (int, float)) else None),
        "level": getattr(level, "name", None),
        "system": event.get("log_system") or event.get("log_namespace"),
        "message": event_text(event),
    }
    for key, value in event_fields(event).items():
        if not key.endswith("_text") and key not in line:
            line[key] = value
    failure = event.get("log_failure")
    if failure is not None:
        line["traceback"] = traceback_text(failure)
    return json.dumps(line, ensure_ascii=False, default=str)


@implementer(ILogObserver)
class JSONLogObserver:
    """Writes each event to ``stream`` as one JSON line."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def __call__(self, event: dict[str, Any]) -> None:
        self.stream.write(event_as_json(event) + "\n")
        self.stream.flush()


def json_stdout() -> JSONLogObserver:
    """For ``twistd --logger popframe.ops.logformat.json_stdout``."""
    return JSONLogObserver(sys.stdout)


#: Where ``--log-format json`` writes (set while the options are checked).
_destination: str | None = None


def json_log_observer() -> JSONLogObserver:
    """The observer ``--log-format json`` has twistd use: JSON lines on
    standard output, or appended to the ``--logfile`` twistd was given."""
    if _destination is None:
        return json_stdout()
    return JSONLogObserver(open(_destination, "a", encoding="utf-8"))  # noqa: SIM115


def log_to_json(twistd_options: Any) -> Callable[[], JSONLogObserver] | None:
    """Make twistd (whose ``ServerOptions`` are ``twistd_options``) log
    JSON lines where it would log text; None when it already has a
    ``--logger`` of its own (which wins, as twistd's own options do)."""
    global _destination
    if twistd_options.get("logger"):
        return None
    logfile = twistd_options.get("logfile")
    nodaemon = twistd_options.get("nodaemon")
    if logfile in (None, "", "-"):
        _destination = None if (nodaemon or logfile == "-") else "twistd.log"
    else:
        _destination = logfile
    twistd_options["logger"] = f"{__name__}.json_log_observer"
    return json_log_observer

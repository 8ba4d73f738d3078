"""Running and watching popframe as a service: what the server does for
the system around it (systemd's readiness protocol, reloads, graceful
stops), observers of its sessions and the side services that publish what
they see, all kept out of the protocol code.  The protocol reports to an
:class:`~popframe.interfaces.observers.ISessionObserver`, which
:func:`session_observer` builds from these:

- :mod:`~popframe.ops.logout`: ``LogoutLine``, one log line per session at
  its end;
- :mod:`~popframe.ops.metrics`: ``MetricsRecorder`` (counting, in plain
  dictionaries) and ``FAMILIES``, the one list of metric names;
- :mod:`~popframe.ops.exposition`: the ``--metrics`` HTTP page
  (prometheus_client's text format, twisted.web);
- :mod:`~popframe.ops.relay`: the metrics of ``--workers`` summed in the
  parent;
- :mod:`~popframe.ops.certificates`: certificate expiry, read from the files;
- :mod:`~popframe.ops.logformat`: ``--log-format json``.

Beside them: :mod:`~popframe.ops.connections` (draining on SIGTERM),
:mod:`~popframe.ops.serving` and :mod:`~popframe.ops.sdnotify`.  Only
``exposition`` imports prometheus_client and twisted.web.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from popframe.ops.logout import LogoutLine
from popframe.ops.metrics import MetricsRecorder
from popframe.server.observers import combine_observers

if TYPE_CHECKING:
    from popframe.interfaces.observers import ISessionObserver

__all__ = ["LogoutLine", "MetricsRecorder", "session_observer"]


def session_observer(recorder: MetricsRecorder | None = None,
                     logout_line: bool = True) -> ISessionObserver:
    """What a factory's sessions report to: the logout line, and
    ``recorder`` when the metrics are on."""
    observers: list[object] = []
    if logout_line:
        observers.append(LogoutLine())
    if recorder is not None:
        observers.append(recorder)
    observer: ISessionObserver = combine_observers(observers)
    return observer

"""What the metrics count, and the counting itself: a session observer
that adds to plain dictionaries, so a login or a RETR costs a few dict
updates (about 0.1 µs each; a prometheus_client counter costs 0.4 µs, 1-2
µs in its multiprocess mode, measured in docs/operations.md).  Prometheus
never sees these objects: :mod:`popframe.ops.exposition` turns a
:meth:`MetricsRecorder.snapshot` (or the sum of every worker's) into its
text format when it is scraped.

:data:`FAMILIES` is the one list of metric names, types, help texts and
labels: the exposition, the example Grafana dashboard and the alert rules
(checked by the tests) and docs/operations.md all use exactly these.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from popframe.interfaces.observers import LoginResult, SessionObserver, SessionRecord

__all__ = [
    "FAMILIES",
    "LATENCY_BUCKETS",
    "Family",
    "MetricsRecorder",
    "Snapshot",
    "family",
    "merge_snapshots",
    "retire",
]

#: The upper bounds of the latency histograms, in seconds (+Inf added).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0, 30.0, 60.0)


@dataclass(frozen=True)
class Family:
    """One metric family.  ``name`` is as Prometheus shows it, ``_total``
    included for counters; ``scope`` says who counts it: ``session`` (the
    process serving sessions, summed over workers) or ``server`` (the
    process serving the metrics)."""

    name: str
    kind: str  # "counter", "gauge" or "histogram"
    help: str
    labels: tuple[str, ...] = ()
    scope: str = "session"


FAMILIES: tuple[Family, ...] = (
    Family("popframe_sessions_open", "gauge",
           "POP3 connections open now, by listener and whether TLS is on (yes/no).",
           ("listener", "tls")),
    Family("popframe_sessions_total", "counter",
           "POP3 sessions ended, by listener, TLS version (no: plain) and how they ended "
           "(QUIT, timeout, login-timeout, dropped, shutdown, too-many-failures, "
           "bad-commands, limit, error).",
           ("listener", "tls", "end")),
    Family("popframe_logins_total", "counter",
           "Login attempts by mechanism (USER, APOP, PLAIN, SCRAM-SHA-256, ...) and result "
           "(ok, failed, blocked, in-use, delayed, limit, error).",
           ("mechanism", "result")),
    Family("popframe_login_duration_seconds", "histogram",
           "Seconds from a login command to its answer, by result (a failure's throttle "
           "delay included).", ("result",)),
    Family("popframe_throttle_delays_total", "counter",
           "Failed logins whose answer the throttle delayed."),
    Family("popframe_throttle_delay_seconds_total", "counter",
           "Seconds of throttle delay given to failed logins."),
    Family("popframe_throttle_drops_total", "counter",
           "Connections dropped for failed logins: too many on the connection "
           "(--max-auth-failures) or from its address (--max-ip-failures).", ("reason",)),
    Family("popframe_messages_retrieved_total", "counter",
           "Messages sent whole, by command (RETR, TOP).", ("command",)),
    Family("popframe_retrieved_bytes_total", "counter",
           "Octets of messages sent (dot-stuffing included, the terminating line not), "
           "by command (RETR, TOP).",
           ("command",)),
    Family("popframe_deletions_committed_total", "counter",
           "Messages deleted by committed QUITs."),
    Family("popframe_retr_duration_seconds", "histogram",
           "Seconds from a RETR to its last octet handed to the network."),
    Family("popframe_lock_conflicts_total", "counter",
           "Logins refused because another session holds the maildrop ([IN-USE])."),
    Family("popframe_backend_errors_total", "counter",
           "Backend failures answered [SYS/TEMP], by backend (auth, store, throttle) and "
           "kind (error, timeout).", ("backend", "kind")),
    Family("popframe_limit_refusals_total", "counter",
           "Connections and logins refused by a limit (max-connections, per-address, "
           "per-user), answered -ERR [SYS/TEMP] and closed.", ("limit",)),
    Family("popframe_tls_certificate_expiry_timestamp_seconds", "gauge",
           "When each configured TLS certificate expires (its notAfter), in seconds since "
           "the epoch, read from its file; name: its first DNS name (SNI).", ("path", "name"),
           scope="server"),
    Family("popframe_worker_restarts_total", "counter",
           "Worker processes restarted after they died (--workers above 1).", (),
           scope="server"),
    Family("popframe_build_info", "gauge", "popframe's version (the value is 1).",
           ("version",), scope="server"),
)

_BY_NAME = {f.name: f for f in FAMILIES}


def family(name: str) -> Family:
    return _BY_NAME[name]


#: A snapshot: per family name, per label values (a tuple; a list in
#: JSON), the value: a number, or for a histogram [bucket counts (not
#: cumulative, +Inf last), sum, count].
Snapshot = dict[str, dict[tuple[str, ...], Any]]

_NO_LABELS: tuple[str, ...] = ()


def _histogram() -> list[Any]:
    return [[0] * (len(LATENCY_BUCKETS) + 1), 0.0, 0]


def _observe(histogram: list[Any], value: float) -> None:
    histogram[0][bisect_left(LATENCY_BUCKETS, value)] += 1
    histogram[1] += value
    histogram[2] += 1


class MetricsRecorder(SessionObserver):
    """Counts what sessions do, in this process (a session observer)."""

    def __init__(self) -> None:
        self.open: dict[tuple[str, ...], int] = {}
        self.sessions: dict[tuple[str, ...], int] = {}
        self.logins: dict[tuple[str, ...], int] = {}
        self.login_seconds: dict[tuple[str, ...], list[Any]] = {}
        self.throttle_delays = 0
        self.throttle_delay_seconds = 0.0
        self.throttle_drops: dict[tuple[str, ...], int] = {}
        self.messages: dict[tuple[str, ...], int] = {}
        self.octets: dict[tuple[str, ...], int] = {}
        self.deletions = 0
        self.retr_seconds = _histogram()
        self.lock_conflicts = 0
        self.backend_errors: dict[tuple[str, ...], int] = {}
        self.refusals: dict[tuple[str, ...], int] = {}

    # -- the observer --------------------------------------------------------

    def session_opened(self, record: SessionRecord) -> None:
        key = (record.listener, "no" if record.tls is None else "yes")
        self.open[key] = self.open.get(key, 0) + 1

    def tls_started(self, record: SessionRecord) -> None:
        plain = (record.listener, "no")
        self.open[plain] = self.open.get(plain, 0) - 1
        encrypted = (record.listener, "yes")
        self.open[encrypted] = self.open.get(encrypted, 0) + 1

    def session_closed(self, record: SessionRecord) -> None:
        listener, tls = record.listener, record.tls
        key = (listener, "no" if tls is None else "yes")
        self.open[key] = self.open.get(key, 0) - 1
        ended = (listener, "no" if tls is None else tls, record.end or "dropped")
        self.sessions[ended] = self.sessions.get(ended, 0) + 1

    def login_finished(self, record: SessionRecord, mechanism: str, result: str,
                       seconds: float) -> None:
        key = (mechanism or "-", result)
        self.logins[key] = self.logins.get(key, 0) + 1
        histogram = self.login_seconds.get((result,))
        if histogram is None:
            histogram = self.login_seconds[(result,)] = _histogram()
        _observe(histogram, seconds)
        if result == LoginResult.IN_USE:
            self.lock_conflicts += 1

    def login_throttled(self, record: SessionRecord, delay: float, dropped: str | None) -> None:
        if delay > 0:
            self.throttle_delays += 1
            self.throttle_delay_seconds += delay
        if dropped is not None:
            self.throttle_drops[(dropped,)] = self.throttle_drops.get((dropped,), 0) + 1

    def message_sent(self, record: SessionRecord, command: str, octets: int,
                     seconds: float) -> None:
        key = (command,)
        self.messages[key] = self.messages.get(key, 0) + 1
        self.octets[key] = self.octets.get(key, 0) + octets
        if command == "RETR":
            _observe(self.retr_seconds, seconds)

    def deletions_committed(self, record: SessionRecord, count: int) -> None:
        self.deletions += count

    def backend_failed(self, role: str, kind: str) -> None:
        key = (role, kind)
        self.backend_errors[key] = self.backend_errors.get(key, 0) + 1

    def connection_refused(self, limit: str, peer: str) -> None:
        self.refusals[(limit,)] = self.refusals.get((limit,), 0) + 1

    # -- reading -------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """Every value now, by family name (see :data:`Snapshot`)."""
        return {
            "popframe_sessions_open": dict(self.open),
            "popframe_sessions_total": dict(self.sessions),
            "popframe_logins_total": dict(self.logins),
            "popframe_login_duration_seconds": {
                k: [list(h[0]), h[1], h[2]] for k, h in self.login_seconds.items()},
            "popframe_throttle_delays_total": {_NO_LABELS: self.throttle_delays},
            "popframe_throttle_delay_seconds_total": {_NO_LABELS: self.throttle_delay_seconds},
            "popframe_throttle_drops_total": dict(self.throttle_drops),
            "popframe_messages_retrieved_total": dict(self.messages),
            "popframe_retrieved_bytes_total": dict(self.octets),
            "popframe_deletions_committed_total": {_NO_LABELS: self.deletions},
            "popframe_retr_duration_seconds": {_NO_LABELS: [
                list(self.retr_seconds[0]), self.retr_seconds[1], self.retr_seconds[2]]},
            "popframe_lock_conflicts_total": {_NO_LABELS: self.lock_conflicts},
            "popframe_backend_errors_total": dict(self.backend_errors),
            "popframe_limit_refusals_total": dict(self.refusals),
        }


def _add(into: dict[tuple[str, ...], Any], labels: tuple[str, ...], value: Any) -> None:
    old = into.get(labels)
    if isinstance(value, list):  # a histogram
        if old is None:
            into[labels] = [list(value[0]), value[1], value[2]]
        else:
            old[0] = [a + b for a, b in zip(old[0], value[0], strict=True)]
            old[1] += value[1]
            old[2] += value[2]
    else:
        into[labels] = (old or 0) + value


def merge_snapshots(snapshots: Iterable[Snapshot]) -> Snapshot:
    """The sum of ``snapshots`` (every worker's): counters, gauges and
    histogram buckets add up."""
    total: Snapshot = {}
    for snapshot in snapshots:
        for name, values in snapshot.items():
            into = total.setdefault(name, {})
            for labels, value in values.items():
                _add(into, tuple(labels), value)
    return total


def retire(snapshot: Snapshot) -> Snapshot:
    """What stays of a dead worker's last snapshot: its counters and
    histograms (so the totals never go back), not its gauges (its
    sessions are gone)."""
    return {name: dict(values) for name, values in snapshot.items()
            if _BY_NAME[name].kind != "gauge"}


def to_json(snapshot: Snapshot) -> dict[str, list[list[Any]]]:
    """A snapshot as JSON can carry it (label tuples as lists)."""
    return {name: [[list(labels), value] for labels, value in values.items()]
            for name, values in snapshot.items()}


def from_json(data: Mapping[str, Any]) -> Snapshot:
    """The inverse of :func:`to_json`; unknown families are dropped (a
    worker of another version)."""
    return {name: {tuple(labels): value for labels, value in values}
            for name, values in data.items() if name in _BY_NAME}

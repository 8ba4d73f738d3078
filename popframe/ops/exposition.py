"""``--metrics ENDPOINT``: the Prometheus page.

Each scrape asks its :class:`MetricsSource` for the values (this process's
recorder, or with ``--workers`` every worker's, summed: see
:mod:`popframe.ops.relay`), adds what the serving process knows itself
(certificate expiry, worker restarts, the version) and renders them with
prometheus_client's text format.  The families are
:data:`popframe.ops.metrics.FAMILIES`, every one present on every scrape
(0 until something happens), so dashboards and alerts never see a gap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from twisted.application.internet import StreamServerEndpointService
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from popframe import __version__
from popframe.ops.certificates import CertificateExpiry
from popframe.ops.metrics import FAMILIES, LATENCY_BUCKETS, MetricsRecorder, Snapshot

__all__ = ["LocalMetrics", "MetricsPage", "MetricsSource", "QuietSite", "exposition",
           "metrics_service"]

log = Logger(namespace="popframe.ops")

#: The text format every Prometheus reads: popframe's names are all plain
#: ASCII, so the page is the same in the 0.0.4 and 1.0.0 formats.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class MetricsSource(Protocol):
    """Where a scrape gets the session metrics."""

    def gather(self) -> Deferred[Snapshot]: ...

    def server_values(self) -> dict[str, float]:
        """Values of ``server``-scoped counters this source keeps
        (``popframe_worker_restarts_total``)."""
        ...


class LocalMetrics:
    """One process's sessions (``--workers 1``)."""

    def __init__(self, recorder: MetricsRecorder) -> None:
        self.recorder = recorder

    def gather(self) -> Deferred[Snapshot]:
        return succeed(self.recorder.snapshot())

    def server_values(self) -> dict[str, float]:
        return {}


def _bucket_bound(bound: float) -> str:
    return f"{bound:g}" if bound != float("inf") else "+Inf"


def _families(snapshot: Snapshot, expiries: dict[tuple[str, str], float],
              server: dict[str, float]) -> Iterator[Metric]:
    for f in FAMILIES:
        values = snapshot.get(f.name, {})
        if f.name == "popframe_tls_certificate_expiry_timestamp_seconds":
            values = {tuple(labels): expiry for labels, expiry in expiries.items()}
        elif f.name == "popframe_build_info":
            values = {(__version__,): 1}
        elif f.scope == "server":
            values = {(): server.get(f.name, 0)}
        labels = list(f.labels)
        metric: Any
        if f.kind == "histogram":
            metric = HistogramMetricFamily(f.name, f.help, labels=labels)
            if not values and not labels:
                values = {(): [[0] * (len(LATENCY_BUCKETS) + 1), 0.0, 0]}
            for key, (counts, total, _) in values.items():
                cumulative, buckets = 0, []
                for bound, count in zip((*LATENCY_BUCKETS, float("inf")), counts, strict=True):
                    cumulative += count
                    buckets.append((_bucket_bound(bound), cumulative))
                metric.add_metric(list(key), buckets, total)
        else:
            kind = CounterMetricFamily if f.kind == "counter" else GaugeMetricFamily
            metric = kind(f.name, f.help, labels=labels)
            if not values and not labels:
                values = {(): 0}
            for key, value in sorted(values.items()):
                metric.add_metric(list(key), value)
        yield metric


class _Collector:
    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return iter(self.metrics)


def exposition(snapshot: Snapshot, expiries: dict[tuple[str, str], float] | None = None,
               server: dict[str, float] | None = None) -> bytes:
    """The Prometheus text page for these values."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(list(_families(snapshot, expiries or {}, server or {}))))
    return generate_latest(registry)


class MetricsPage(Resource):
    """``GET /metrics``: gathers, then renders."""

    isLeaf = True

    def __init__(self, source: MetricsSource, certificates: CertificateExpiry) -> None:
        super().__init__()
        self.source = source
        self.certificates = certificates

    def render_GET(self, request: Request) -> Any:
        finished: list[bool] = []
        request.notifyFinish().addBoth(lambda _: finished.append(True))

        def respond(snapshot: Snapshot) -> None:
            body = exposition(snapshot, self.certificates.expiries(),
                              self.source.server_values())
            if not finished:
                request.setHeader(b"Content-Type", CONTENT_TYPE.encode("ascii"))
                request.write(body)
                request.finish()

        def failed(failure: Any) -> None:
            log.failure("gathering the metrics failed", failure)
            if not finished:
                request.setResponseCode(500)
                request.write(b"gathering the metrics failed\n")
                request.finish()

        self.source.gather().addCallbacks(respond, failed)
        return NOT_DONE_YET


class _Index(Resource):
    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"popframe: the metrics are at /metrics\n"


class QuietSite(Site):
    """A site whose log says ``NAME starting on PORT`` and whose requests
    are not logged (Prometheus scrapes every few seconds; autoconfig
    queries hold addresses)."""

    def __init__(self, resource: Resource, name: str) -> None:
        super().__init__(resource)
        self.name = name

    def logPrefix(self) -> str:
        return self.name

    def log(self, request: Any) -> None:
        pass


def metrics_service(description: str, reactor: Any, source: MetricsSource,
                    certificates: CertificateExpiry,
                    raise_errors: Callable[[Any], None] | None = None,
                    health: Resource | None = None) -> StreamServerEndpointService:
    """The service serving ``/metrics`` (and ``health``, a
    :class:`~popframe.ops.health.HealthPage`, at ``/health``) on the
    ``--metrics`` endpoint."""
    root = _Index()
    root.putChild(b"metrics", MetricsPage(source, certificates))
    if health is not None:
        root.putChild(b"health", health)
    site = QuietSite(root, "popframe metrics")
    site.noisy = False
    service = StreamServerEndpointService(serverFromString(reactor, description), site)
    if raise_errors is not None:
        raise_errors(service)
    return service

"""Request counts and latency by route and status, exposed in the Prometheus text format by prometheus_client.

Labels use the route template (``/v1/subjects/{subject_id}/feed``), never the concrete path, so subject
ids stay out of the metrics and the label set stays bounded. Each app has its own registry, so several apps
in one process (the tests) count apart.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import disable_created_metrics

# Seconds; tuned for an API whose feed reads should take single-digit milliseconds.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# The endpoint publishes the series it always has; a `_created` timestamp per series would double them for no
# reader of ours.
disable_created_metrics()


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._requests = Counter("yiwang_http_requests", "HTTP requests by method, route template and status.",
                                 ("method", "route", "status"), registry=self.registry)
        self._latency = Histogram("yiwang_http_request_duration_seconds",
                                  "HTTP request latency by method and route template.",
                                  ("method", "route"), buckets=BUCKETS, registry=self.registry)
        # Every request is counted (the feed fast lane's too): keep the labelled children at hand, so a request
        # costs two dict lookups and the increments, not the label validation of `.labels()`.
        self._counters: dict[tuple[str, str, int], Counter] = {}
        self._histograms: dict[tuple[str, str], Histogram] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        counter = self._counters.get((method, route, status))
        if counter is None:
            counter = self._counters[(method, route, status)] = self._requests.labels(method, route, str(status))
        histogram = self._histograms.get((method, route))
        if histogram is None:
            histogram = self._histograms[(method, route)] = self._latency.labels(method, route)
        counter.inc()
        histogram.observe(seconds)

    def render(self) -> str:
        return generate_latest(self.registry).decode()

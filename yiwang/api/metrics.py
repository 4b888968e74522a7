"""Request counts and latency by route and status, rendered in the Prometheus text format.

Labels use the route template (``/v1/subjects/{subject_id}/feed``), never the concrete path, so subject
ids stay out of the metrics and the label set stays bounded.
"""

from __future__ import annotations

import threading
from collections import defaultdict

# Seconds; tuned for an API whose feed reads should take single-digit milliseconds.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count: dict[tuple[str, str, str], int] = defaultdict(int)
        self._hist: dict[tuple[str, str], list[int]] = {}
        self._sum: dict[tuple[str, str], float] = defaultdict(float)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self._count[(method, route, str(status))] += 1
            key = (method, route)
            hist = self._hist.get(key)
            if hist is None:
                hist = self._hist[key] = [0] * (len(BUCKETS) + 1)
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    hist[i] += 1
                    break
            else:
                hist[-1] += 1
            self._sum[key] += seconds

    def render(self) -> str:
        with self._lock:
            counts = dict(self._count)
            hists = {k: list(v) for k, v in self._hist.items()}
            sums = dict(self._sum)
        lines = [
            "# HELP yiwang_http_requests_total HTTP requests by method, route template and status.",
            "# TYPE yiwang_http_requests_total counter",
        ]
        for (method, route, status), n in sorted(counts.items()):
            lines.append(
                f'yiwang_http_requests_total{{method="{method}",route="{_escape(route)}",status="{status}"}} {n}'
            )
        lines += [
            "# HELP yiwang_http_request_duration_seconds HTTP request latency by method and route template.",
            "# TYPE yiwang_http_request_duration_seconds histogram",
        ]
        for (method, route), hist in sorted(hists.items()):
            labels = f'method="{method}",route="{_escape(route)}"'
            cumulative = 0
            for bound, n in zip(BUCKETS, hist):
                cumulative += n
                lines.append(f'yiwang_http_request_duration_seconds_bucket{{{labels},le="{bound}"}} {cumulative}')
            cumulative += hist[-1]
            lines.append(f'yiwang_http_request_duration_seconds_bucket{{{labels},le="+Inf"}} {cumulative}')
            lines.append(f"yiwang_http_request_duration_seconds_sum{{{labels}}} {sums[(method, route)]:.6f}")
            lines.append(f"yiwang_http_request_duration_seconds_count{{{labels}}} {cumulative}")
        return "\n".join(lines) + "\n"

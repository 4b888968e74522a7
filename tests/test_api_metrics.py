"""``/metrics`` on live servers, read with Prometheus' own text parser: the series names, label sets and buckets
the API has always published, counted per app (two apps in one process do not share a registry)."""

from __future__ import annotations

import contextlib

import httpx
from prometheus_client.parser import text_string_to_metric_families

from data.settings import load_settings
from yiwang.api.app import create_app
from yiwang.api.keys import create_key
from yiwang.api.metrics import BUCKETS, Metrics
from yiwang.api.server import serve_in_thread
from yiwang.migrations import open_db

PREFERENCES = "/v1/subjects/{subject_id}/preferences"


@contextlib.contextmanager
def _live_app(home):
    settings = load_settings(home=home, id_hash_key="test-key")
    db = open_db(settings.db_path)
    _, key = create_key(db, "portal", ["feed:read"])
    db.conn.close()
    with serve_in_thread(create_app(settings)) as base_url, httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as client:
        yield client


def _families(client: httpx.Client) -> dict:
    resp = client.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {f.name: f for f in text_string_to_metric_families(resp.text)}


def _requests(families: dict) -> dict[tuple[str, str, str], float]:
    return {(s.labels["method"], s.labels["route"], s.labels["status"]): s.value
            for s in families["yiwang_http_requests"].samples}


def test_two_apps_publish_the_same_series_and_count_apart(tmp_path):
    with _live_app(tmp_path / "a") as a, _live_app(tmp_path / "b") as b:
        for _ in range(3):
            assert a.get("/v1/subjects/P7654321/preferences").status_code == 200
        assert b.get("/v1/no/such/route").status_code == 404
        seen_a, seen_b = _families(a), _families(b)

    for families in (seen_a, seen_b):
        assert {name: f.type for name, f in families.items()} == {
            "yiwang_http_requests": "counter", "yiwang_http_request_duration_seconds": "histogram"}
        assert {s.name for s in families["yiwang_http_requests"].samples} == {"yiwang_http_requests_total"}
        assert all(set(s.labels) == {"method", "route", "status"} for s in families["yiwang_http_requests"].samples)
        latency = families["yiwang_http_request_duration_seconds"].samples
        assert {s.name for s in latency} == {f"yiwang_http_request_duration_seconds_{p}" for p in
                                              ("bucket", "sum", "count")}
        for route in {s.labels["route"] for s in latency}:
            bounds = [s.labels["le"] for s in latency if s.name.endswith("_bucket") and s.labels["route"] == route]
            assert bounds == [*(str(b) for b in BUCKETS), "+Inf"]

    assert _requests(seen_a)[("GET", PREFERENCES, "200")] == 3
    assert ("GET", "unmatched", "404") not in _requests(seen_a)
    assert _requests(seen_b)[("GET", "unmatched", "404")] == 1
    assert not any(route == PREFERENCES for _, route, _ in _requests(seen_b))
    assert not any("P7654321" in str(s.labels) for f in seen_a.values() for s in f.samples)


def test_latency_lands_in_its_bucket_and_the_count_matches():
    metrics = Metrics()
    for seconds in (0.0005, 0.003, 0.003, 7.0):
        metrics.observe("GET", "/healthz", 200, seconds)
    (latency,) = [f for f in text_string_to_metric_families(metrics.render())
                  if f.name == "yiwang_http_request_duration_seconds"]
    values = {(s.name.rsplit("_", 1)[-1], s.labels.get("le")): s.value for s in latency.samples}
    assert values[("bucket", "0.001")] == 1 and values[("bucket", "0.0025")] == 1
    assert values[("bucket", "0.005")] == 3 and values[("bucket", "5.0")] == 3 and values[("bucket", "+Inf")] == 4
    assert values[("count", None)] == 4 and abs(values[("sum", None)] - 7.0065) < 1e-9

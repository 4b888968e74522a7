"""The edge of the API on a live server: one error shape for 404/405/413/422/500, request ids, health,
metrics by route template, the OpenAPI document, and no personal data in the logs."""

from __future__ import annotations

import logging

import httpx
import pytest

from yiwang.api.app import create_app
from yiwang.api.keys import create_key
from yiwang.api.server import serve_in_thread
from data.settings import load_settings
from yiwang.migrations import open_db


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("edge")
    settings = load_settings(home=tmp / "home", id_hash_key="test-key", reminder_rules_file=tmp / "rules.yaml",
                             api_max_body_bytes=1000)
    app = create_app(settings)

    # A route that fails the way a bug would, to see what the client and the log get.
    @app.get("/v1/_boom/{subject_id}", include_in_schema=False)
    def boom(subject_id: str):
        raise RuntimeError(f"secret detail about {subject_id}")

    db = open_db(settings.db_path)
    _, key = create_key(db, "portal", ["feed:read", "events:write"])
    with serve_in_thread(app) as base_url, httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as client:
        yield client
    db.conn.close()


def _shape(resp, status, code):
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    error = resp.json()["error"]
    assert error["code"] == code and error["message"] and error["request_id"] == resp.headers["x-request-id"]
    return error


def test_unknown_route_is_404(live):
    _shape(live.get("/v1/nothing/here"), 404, "not_found")


def test_wrong_method_is_405(live):
    _shape(live.delete("/v1/events"), 405, "method_not_allowed")


def test_bad_path_parameter_is_422_without_echoing_input(live):
    error = _shape(live.get("/v1/subjects/" + "x" * 65 + "/feed"), 422, "invalid_request")
    assert error["details"][0]["loc"] == ["path", "subject_id"]
    assert "x" * 65 not in str(error)


def test_declared_oversized_body_is_413_before_auth_or_parsing(live):
    resp = httpx.put(str(live.base_url.join("/v1/subjects/P1/preferences")), content=b"{" + b" " * 2000 + b"}",
                     headers={"Content-Type": "application/json"}, timeout=10)
    _shape(resp, 413, "payload_too_large")


def test_unexpected_failure_is_500_with_the_shape_and_a_clean_log(live, caplog):
    with caplog.at_level(logging.ERROR, logger="yiwang.api"):
        error = _shape(live.get("/v1/_boom/P0000123"), 500, "internal_error")
    assert "secret" not in error["message"]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert error["request_id"] in logged and "RuntimeError" in logged
    assert "P0000123" not in logged and "secret" not in logged


def test_request_id_is_echoed_when_sane_and_replaced_when_not(live):
    assert live.get("/healthz", headers={"X-Request-ID": "portal-abc.123"}).headers["x-request-id"] == "portal-abc.123"
    replaced = live.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"}).headers["x-request-id"]
    assert replaced != "bad id\twith spaces" and len(replaced) == 32


def test_healthz(live):
    resp = httpx.get(str(live.base_url.join("/healthz")), timeout=10)
    assert resp.status_code == 200 and resp.json() == {"status": "ok"}


def test_metrics_count_by_route_template_never_by_subject(live):
    live.get("/v1/subjects/P7654321/preferences")
    live.get("/v1/subjects/P7654321/preferences")
    live.get("/v1/no/such/route")
    text = httpx.get(str(live.base_url.join("/metrics")), timeout=10).text
    assert "# TYPE yiwang_http_requests_total counter" in text
    line = 'yiwang_http_requests_total{method="GET",route="/v1/subjects/{subject_id}/preferences",status="200"}'
    assert any(row.startswith(line) and float(row.split()[-1]) >= 2 for row in text.splitlines())
    assert 'route="unmatched",status="404"' in text
    assert 'yiwang_http_request_duration_seconds_bucket{le="+Inf",method="GET",route="/healthz"}' in text
    assert "P7654321" not in text


def test_openapi_is_published_with_bearer_auth(live):
    spec = httpx.get(str(live.base_url.join("/openapi.json")), timeout=10).json()
    assert spec["info"]["title"] == "yiwang API"
    assert "/v1/subjects/{subject_id}/feed" in spec["paths"]
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    feed = spec["paths"]["/v1/subjects/{subject_id}/feed"]["get"]
    assert feed["security"] == [{"bearerAuth": []}] and feed["x-scopes"] == ["feed:read"]
    assert "security" not in spec["paths"]["/healthz"]["get"]
    assert "/v1/_boom/{subject_id}" not in spec["paths"]

"""Issue 10, item 15, on a live server: what the OpenAPI document declares, the Allow header of a 405, uvicorn's
own 400s in the one error shape, /docs without a CDN, and a body that never arrives."""

from __future__ import annotations

import json
import re
import socket
import time

import httpx
import pytest

from yiwang.api.app import create_app
from yiwang.api.keys import create_key
from yiwang.api.server import HTTP_PROTOCOL, JsonErrorH11Protocol, serve_in_thread
from data.settings import load_settings
from yiwang.migrations import open_db

BODY_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("protocol")
    return load_settings(home=tmp / "home", id_hash_key="test-key", reminder_rules_file=tmp / "rules.yaml")


@pytest.fixture(scope="module")
def key(settings):
    db = open_db(settings.db_path)
    _, full = create_key(db, "ops", ["admin"])
    db.conn.close()
    return full


@pytest.fixture(scope="module")
def base_url(settings):
    with serve_in_thread(create_app(settings, body_timeout_s=BODY_TIMEOUT_S)) as url:
        yield url


# -- the OpenAPI document ---------------------------------------------------------------------------------------


def test_every_operation_declares_its_errors_in_the_one_error_shape(base_url):
    spec = httpx.get(base_url + "/openapi.json", timeout=10).json()
    error = spec["components"]["schemas"]["Error"]
    assert set(error["properties"]) == {"error"}
    inner = error["properties"]["error"]
    assert {"code", "message", "request_id"} <= set(inner["required"])
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            for status in ("400", "413", "500", "default", "422"):
                if status == "422" and not op.get("parameters") and "requestBody" not in op:
                    continue  # nothing to validate, no 422
                assert status in op["responses"], (method, path, status)
                schema = op["responses"][status]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, status)
            if "{" in path:
                assert "404" in op["responses"], (method, path)
                assert op["responses"]["404"]["content"]["application/json"]["schema"]["$ref"].endswith("/Error")
            if "security" in op:
                for status in ("401", "403"):
                    assert op["responses"][status]["content"]["application/json"]["schema"]["$ref"].endswith("/Error")


def test_404_of_an_unknown_subject_is_declared_where_it_happens(base_url):
    spec = httpx.get(base_url + "/openapi.json", timeout=10).json()
    assert "404" in spec["paths"]["/v1/subjects/{subject_id}/feed"]["get"]["responses"]
    assert "404" in spec["paths"]["/v1/subjects/{subject_id}/feed/{item_id}/dismiss"]["post"]["responses"]


# -- 405 and its Allow header ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["OPTIONS", "DELETE", "PATCH"])
def test_405_lists_every_method_the_path_has(base_url, key, method):
    resp = httpx.request(method, base_url + "/v1/rules", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert resp.status_code == 405
    assert resp.json()["error"]["code"] == "method_not_allowed"
    allowed = {m.strip() for m in resp.headers["allow"].split(",")}
    assert {"GET", "PUT"} <= allowed and method not in allowed


def test_405_on_a_single_method_path(base_url):
    resp = httpx.request("DELETE", base_url + "/v1/events", timeout=10)
    assert resp.status_code == 405
    assert {m.strip() for m in resp.headers["allow"].split(",")} == {"POST"}


# -- malformed HTTP, answered by the server before the app ------------------------------------------------------


def _raw(base_url: str, payload: bytes, timeout: float = 10.0) -> tuple[bytes, float]:
    """Send raw bytes, read until the server closes; the answer and how long the server took to close."""
    host, port = re.match(r"http://([^:]+):(\d+)", base_url).groups()
    start = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(payload)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                raise AssertionError(f"server kept the connection open for {timeout} s; got {b''.join(chunks)!r}")
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks), time.monotonic() - start


def _head_and_json(answer: bytes) -> tuple[str, dict, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return lines[0], {k.lower(): v for k, v in headers.items()}, json.loads(body)


@pytest.mark.parametrize("payload", [
    b"GARBAGE\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
])
def test_malformed_http_gets_a_json_400_in_the_error_shape(base_url, payload):
    answer, _ = _raw(base_url, payload)
    status, headers, body = _head_and_json(answer)
    assert status.startswith("HTTP/1.1 400")
    assert headers["content-type"] == "application/json"
    assert set(body) == {"error"} and body["error"]["code"] == "bad_request"
    assert body["error"]["message"] and re.fullmatch(r"[0-9a-f]{32}", body["error"]["request_id"])


def test_the_h11_protocol_answers_malformed_http_in_the_error_shape_too(settings):
    with serve_in_thread(create_app(settings), http=JsonErrorH11Protocol) as url:
        answer, _ = _raw(url, b"GARBAGE\r\n\r\n")
    status, headers, body = _head_and_json(answer)
    assert status.startswith("HTTP/1.1 400") and headers["content-type"] == "application/json"
    assert body["error"]["code"] == "bad_request"


# -- a body shorter than its Content-Length ---------------------------------------------------------------------


def test_a_body_that_never_arrives_is_answered_and_the_connection_closed(base_url, key):
    request = (
        "POST /v1/events HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n"
    ).encode() + b'{"events": ['
    answer, took = _raw(base_url, request, timeout=BODY_TIMEOUT_S + 10)
    status, headers, body = _head_and_json(answer)
    assert status.startswith("HTTP/1.1 400"), answer
    assert body["error"]["code"] == "bad_request" and "body" in body["error"]["message"]
    assert headers.get("connection") == "close"
    assert took >= BODY_TIMEOUT_S * 0.9


def test_the_default_body_timeout_is_a_few_seconds():
    from yiwang.api.middleware import BODY_TIMEOUT_S as default

    assert 1 <= default <= 10


# -- request headers that never complete ------------------------------------------------------------------------


@pytest.fixture(scope="module", params=[HTTP_PROTOCOL, JsonErrorH11Protocol], ids=lambda c: c.__name__)
def quick_header_deadline(settings, request):
    protocol = type("QuickDeadline", (request.param,), {"header_timeout_s": BODY_TIMEOUT_S})
    with serve_in_thread(create_app(settings), http=protocol) as url:
        yield url


@pytest.mark.parametrize("payload", [b"", b"GET /healthz HTTP/1.1\r\nHost: x\r\n"], ids=["silent", "partial"])
def test_a_connection_whose_headers_never_complete_is_closed(quick_header_deadline, payload):
    answer, took = _raw(quick_header_deadline, payload, timeout=BODY_TIMEOUT_S + 10)
    assert answer == b""
    assert took >= BODY_TIMEOUT_S * 0.9


def test_the_header_deadline_spares_a_keep_alive_connection_between_requests(quick_header_deadline):
    host, port = re.match(r"http://([^:]+):(\d+)", quick_header_deadline).groups()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        for attempt in range(2):
            if attempt:
                time.sleep(BODY_TIMEOUT_S * 1.5)  # longer than the header deadline, shorter than keep-alive (5 s)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while not answer.endswith(b"}"):
                answer += sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200")


def test_the_default_header_deadline_is_a_few_seconds():
    from yiwang.api.server import HEADER_TIMEOUT_S

    assert 1 <= HEADER_TIMEOUT_S <= 30


# -- /docs without a CDN -----------------------------------------------------------------------------------------


def test_docs_reference_only_local_assets_and_serve_them(base_url):
    resp = httpx.get(base_url + "/docs", timeout=10)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    html = resp.text
    referenced = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
    referenced += re.findall(r"""url:\s*['"]([^'"]+)['"]""", html)
    assert referenced, html
    assert not re.search(r"https?://", html), "the docs page must not load anything from another host"
    scripts = [u for u in referenced if u.endswith(".js")]
    styles = [u for u in referenced if u.endswith(".css")]
    assert scripts and styles, referenced
    for url in referenced:
        assert url.startswith("/"), url
        asset = httpx.get(base_url + url, timeout=10)
        assert asset.status_code == 200, url
        assert len(asset.content) > 100, url
    bundle = httpx.get(base_url + scripts[0], timeout=10)
    assert "SwaggerUIBundle" in bundle.text and "javascript" in bundle.headers["content-type"]

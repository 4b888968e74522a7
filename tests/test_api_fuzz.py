"""Schema-driven fuzzing of the published OpenAPI document against a live server: no 5xx, and every
error in the one shape. Positive and negative cases (schemathesis), a bounded number per operation.

"""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import httpx
import polars as pl
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from yiwang.api.app import create_app
from yiwang.api.keys import create_key
from yiwang.api.server import run_api
from data.registry import insert_rows
from data.settings import REPO_ROOT, load_settings
from recommender.feeds import publish
from yiwang.migrations import open_db

EXAMPLES = 12  # per operation and test: keeps the default run near 20 s on 2 cores
SLOW_EXAMPLES = 300

schema = schemathesis.openapi.from_dict(create_app(load_settings(home="/nonexistent")).openapi())


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    rules = tmp / "rules.yaml"
    shipped = Path(REPO_ROOT) / "data" / "reminder_rules.yaml"
    if shipped.exists():
        shutil.copy(shipped, rules)
    config = load_settings(home=tmp / "home", id_hash_key="test-key", reminder_rules_file=rules,
                           api_max_body_bytes=64_000, api_max_events_per_request=20)
    db = open_db(config.db_path)
    insert_rows(db.conn, "catalog", pl.DataFrame({"item_id": ["ITEM1"], "name": "婚姻登记", "department": "市民政局",
                                                  "audience": "person", "category": "婚育", "ingest_id": 0}))
    insert_rows(db.conn, "people", pl.DataFrame({"person_id": ["P0000001"], "birth_date": "1990-01-01", "gender": "F",
                                                 "district": "黄浦区", "local_hukou": 1, "ingest_id": 0}))
    reasons = json.dumps([{"source": "tag", "zh": "因为您近期结婚", "en": "you recently married", "ref": None}])
    publish(db, config, [pl.DataFrame({"subject_id": ["P0000001"], "rank": [1], "item_id": ["ITEM1"], "score": [0.9],
                                       "reasons_json": [reasons]})], "m", date(2026, 3, 1))
    _, admin = create_key(db, "fuzz", ["admin"])
    db.conn.close()
    with run_api(config) as base_url:
        yield base_url, {"Authorization": f"Bearer {admin}"}


def _check(case, target) -> None:
    base_url, headers = target
    resp = case.call(base_url=base_url, headers=headers, timeout=30)
    if resp.status_code >= 400:
        content_type = resp.headers.get("content-type") or resp.headers.get("Content-Type")
        assert content_type[0].startswith("application/json"), (case.method, case.path, resp.status_code, resp.text)
        error = resp.json()["error"]
        assert set(error) >= {"code", "message", "request_id"}
        assert resp.status_code < 500, (case.method, case.path, resp.status_code, resp.text)


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case, target):
    _check(case, target)


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=SLOW_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_long(case, target):
    _check(case, target)


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", "application/x-www-form-urlencoded"])
@pytest.mark.parametrize("body", [b"", b"null", b"{", b'{"events": [null]}', b"\x00\x01\x02", "„“".encode("gb18030")])
def test_malformed_bodies_on_every_write_route_are_4xx(target, content_type, body):
    base_url, headers = target
    writes = [("POST", "/v1/events"), ("PUT", "/v1/subjects/P0000001/preferences"), ("PUT", "/v1/rules")]
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as client:
        for method, path in writes:
            resp = client.request(method, path, content=body, headers={"Content-Type": content_type})
            assert 400 <= resp.status_code < 500, (method, path, resp.status_code, resp.text)
            assert resp.json()["error"]["request_id"] == resp.headers["x-request-id"]

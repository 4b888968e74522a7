"""Operators and data scientists through the API on a live server: reminder rules (read, replace only when
valid, dry-run) and model versions (list, promote), each change audited."""

from __future__ import annotations

import json
import shutil

import httpx
import pytest

from notifier.outbox import stored_alerts
from yiwang.api.audit import list_audit
from yiwang.api.keys import create_key
from yiwang.api.server import run_api
from data.settings import REPO_ROOT, load_settings
from yiwang.migrations import open_db


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("operators")
    rules = tmp / "rules.yaml"
    shutil.copy(REPO_ROOT / "data" / "reminder_rules.yaml", rules)
    settings = load_settings(home=tmp / "home", id_hash_key="test-key", reminder_rules_file=rules)
    db = open_db(settings.db_path)
    _, key = create_key(db, "ops", ["rules:write", "models:write"])
    with run_api(settings) as base_url, httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60
    ) as client:
        yield client, settings, db
    db.conn.close()


def test_rules_in_force(live):
    client, settings, _ = live
    got = client.get("/v1/rules").json()
    assert got["source"] == settings.reminder_rules_file.name and got["warning"] is None
    assert "hk_macau_permit_expiry" in [r["id"] for r in got["rules"]]


def test_a_broken_rules_file_is_refused_and_the_rules_in_force_stay(live):
    client, settings, db = live
    before = settings.reminder_rules_file.read_text(encoding="utf-8")
    broken = before.replace("  - id: passport_expiry", "  - id: passport_expiry\n    frobnicate: 3", 1)
    resp = client.put("/v1/rules", json={"content": broken})
    assert resp.status_code == 422
    error = resp.json()["error"]
    assert error["code"] == "rules_error" and "passport_expiry" in error["message"]
    assert settings.reminder_rules_file.read_text(encoding="utf-8") == before
    ok = client.put("/v1/rules", json={"content": before})
    assert ok.status_code == 200 and ok.json()["sha256"]
    outcomes = [r["outcome"] for r in reversed(list_audit(db)) if r["action"] == "rules.replace"]
    assert outcomes == ["rules_error", "ok"]


def test_dry_run_sends_nothing(live):
    client, _, db = live
    resp = client.post("/v1/rules/hk_macau_permit_expiry/dry-run", params={"as_of": "2026-06-01"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["rule_id"] == "hk_macau_permit_expiry" and body["as_of"] == "2026-06-01" and body["subjects"] == 0
    assert stored_alerts(db.conn).height == 0
    assert client.post("/v1/rules/no_such_rule/dry-run").status_code == 404
    assert client.post("/v1/rules/hk_macau_permit_expiry/dry-run", params={"as_of": "June"}).status_code == 422


def test_models_list_and_promote(live):
    client, settings, db = live
    assert client.get("/v1/models").json() == {"models": []}
    version = "20260601T000000-test"
    (settings.models_dir / version).mkdir(parents=True)
    (settings.models_dir / version / "metrics.json").write_text(json.dumps({"as_of": "2026-06-01", "model": "ease"}))
    listed = client.get("/v1/models").json()["models"]
    assert [(m["version"], m["promoted"]) for m in listed] == [(version, False)]
    resp = client.post(f"/v1/models/{version}/promote")
    assert resp.status_code == 200 and resp.json() == {"version": version, "promoted": True}
    assert client.get("/v1/models").json()["models"][0]["promoted"] is True
    assert client.post("/v1/models/nope/promote").status_code == 404
    audit = [(r["action"], r["subject"], r["outcome"]) for r in reversed(list_audit(db)) if r["action"] == "model.promote"]
    assert audit == [("model.promote", version, "ok"), ("model.promote", "nope", "not_found")]

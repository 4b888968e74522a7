"""The reminder rules in force belong to the store home (issue 10, item 4): `PUT /v1/rules` against a live server
leaves the code checkout's `data/reminder_rules.yaml` untouched, and no rules response shows a server path."""

from __future__ import annotations

import hashlib
from datetime import date

import httpx
import pytest

from notifier.engine import evaluate_alerts
from yiwang.api.keys import create_key
from yiwang.api.server import run_api
from data.settings import REPO_ROOT, load_settings
from yiwang.migrations import open_db

CHECKOUT_RULES = REPO_ROOT / "data" / "reminder_rules.yaml"


@pytest.fixture
def live(tmp_path, monkeypatch):
    """A server with the default settings: rules seeded from the checkout's data/reminder_rules.yaml."""
    monkeypatch.delenv("YIWANG_REMINDER_RULES_FILE", raising=False)
    monkeypatch.delenv("YIWANG_DATA_DIR", raising=False)
    original = CHECKOUT_RULES.read_bytes()
    settings = load_settings(home=tmp_path / "home", id_hash_key="test-key")
    assert settings.reminder_rules_file is None and settings.data_dir == REPO_ROOT / "data"
    db = open_db(settings.db_path)
    _, key = create_key(db, "ops", ["rules:write"])
    try:
        with run_api(settings) as base_url, httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60
        ) as client:
            yield client, settings, db, original
    finally:
        db.conn.close()
        if CHECKOUT_RULES.read_bytes() != original:  # put the checkout back whatever the code under test did
            CHECKOUT_RULES.write_bytes(original)


def _no_server_paths(text: str, settings) -> None:
    for path in (settings.home, settings.home.resolve(), REPO_ROOT, settings.data_dir, CHECKOUT_RULES):
        assert str(path) not in text
    assert "/tmp/" not in text and "/work/" not in text


def test_put_rules_writes_the_home_never_the_checkout(live):
    client, settings, db, original = live
    shipped = original.decode("utf-8")
    got = client.get("/v1/rules")
    assert got.status_code == 200
    _no_server_paths(got.text, settings)
    body = got.json()
    assert body["sha256"] == hashlib.sha256(original).hexdigest() and body["warning"] is None
    assert "hk_macau_permit_expiry" in [r["id"] for r in body["rules"]]

    changed = shipped.replace("  - id: passport_expiry\n    version: 1", "  - id: passport_expiry\n    version: 2", 1)
    assert changed != shipped
    put = client.put("/v1/rules", json={"content": changed})
    assert put.status_code == 200, put.text
    _no_server_paths(put.text, settings)
    assert put.json()["sha256"] == hashlib.sha256(changed.encode()).hexdigest() and put.json()["updated_at"]
    # The checkout is byte-identical; the rules in force live in the home.
    assert CHECKOUT_RULES.read_bytes() == original
    assert (settings.home / "rules" / "reminder_rules.yaml").read_text(encoding="utf-8") == changed
    again = client.get("/v1/rules")
    _no_server_paths(again.text, settings)
    assert again.json()["sha256"] == put.json()["sha256"]
    assert [r["version"] for r in again.json()["rules"] if r["id"] == "passport_expiry"] == [2]


def test_rules_errors_and_dry_runs_show_no_server_path(live):
    client, settings, db, original = live
    broken = original.decode("utf-8").replace("  - id: passport_expiry", "  - id: passport_expiry\n    frobnicate: 3", 1)
    resp = client.put("/v1/rules", json={"content": broken})
    assert resp.status_code == 422 and "passport_expiry" in resp.text
    _no_server_paths(resp.text, settings)
    assert CHECKOUT_RULES.read_bytes() == original
    for resp in (client.post("/v1/rules/no_such_rule/dry-run"),
                 client.post("/v1/rules/hk_macau_permit_expiry/dry-run", params={"as_of": "2026-06-01"})):
        assert resp.status_code in (200, 404), resp.text
        _no_server_paths(resp.text, settings)
    # A hand-broken rules file in the home: the warning names the file by its place in the home only.
    client.put("/v1/rules", json={"content": original.decode("utf-8")})
    evaluate_alerts(settings, db, date(2026, 6, 1))
    (settings.home / "rules" / "reminder_rules.yaml").write_text("rules: [", encoding="utf-8")
    got = client.get("/v1/rules")
    assert got.status_code == 200 and "not valid YAML" in got.json()["warning"]
    _no_server_paths(got.text, settings)

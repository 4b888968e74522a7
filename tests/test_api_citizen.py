"""The citizen's rights through the API on a live server: preferences, tags (sensitive ones only with
profile:read; delete survives, restore lifts), the profile, and the audit trail each of them leaves."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone

import httpx
import polars as pl
import pytest

from notifier.delivery import deliver
from notifier.engine import evaluate_alerts
from notifier.outbox import list_alerts
from profiler import new_batch, publish_profiles
from yiwang.api.audit import list_audit
from yiwang.api.keys import create_key
from yiwang.api.server import run_api
from data.citizen import read_preferences
from data.settings import load_settings
from taggers.store import list_suppressed
from tagging import put_tags, tag_row
from testsupport.registries import put_rows
from yiwang.migrations import open_db

SUBJECT = "P0000042"


def _tag(code, dimension, sensitive=0):
    return tag_row(SUBJECT, code, date(2026, 5, 3), sensitive=bool(sensitive), as_of=date(2026, 6, 1),
                   dimension=dimension, source="rule@1", evidence_zh="婚姻登记 2026-05-03",
                   evidence_en="marriage registered 2026-05-03")


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("citizen")
    settings = load_settings(home=tmp / "home", id_hash_key="test-key", reminder_rules_file=tmp / "rules.yaml")
    db = open_db(settings.db_path)
    put_tags(db, [_tag("life_event.marriage", "life_event"), _tag("crowd.hardship", "crowd", sensitive=1)])
    profile = pl.DataFrame(
        {"subject_id": [SUBJECT], "subject_type": ["person"], "district": ["静安区"], "age": [35],
         "low_income": [True], "gender": ["F"]}
    )
    publish_profiles(settings, db.conn, profile, new_batch(db, date(2026, 6, 1)))
    keys = {
        name: create_key(db, name, scopes)
        for name, scopes in {
            "portal": ["feed:read", "events:write"],
            "rights": ["profile:read", "tags:write"],
        }.items()
    }
    with run_api(settings) as base_url:
        clients = {
            name: httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
            for name, (_, key) in keys.items()
        }
        yield clients, {name: rec.key_id for name, (rec, _) in keys.items()}, db, settings
        for c in clients.values():
            c.close()
    db.conn.close()


def test_preferences_default_then_set(live):
    clients, _, db, _ = live
    portal = clients["portal"]
    got = portal.get("/v1/subjects/P0000099/preferences").json()
    assert got == {"subject_id": "P0000099", "personalisation": True, "channels": ["in_app"], "updated_at": None}
    put = portal.put("/v1/subjects/P0000099/preferences", json={"personalisation": False, "channels": ["webhook"]})
    assert put.status_code == 200
    assert portal.get("/v1/subjects/P0000099/preferences").json()["channels"] == ["webhook"]
    stored = read_preferences(db.conn, "P0000099")
    assert (stored.personalisation, stored.channels) == (False, ["webhook"]) and stored.updated_at


@pytest.mark.parametrize("body", [
    {}, {"personalisation": "maybe"}, {"personalisation": True, "channels": []},
    {"personalisation": True, "channels": ["sms"]}, {"personalisation": True, "channels": ["in_app", "in_app"]},
])
def test_bad_preferences_are_422(live, body):
    clients, _, _, _ = live
    resp = clients["portal"].put("/v1/subjects/P0000099/preferences", json=body)
    assert resp.status_code == 422 and resp.json()["error"]["code"] == "invalid_request"


def test_sensitive_tags_only_with_profile_scope(live):
    clients, _, _, _ = live
    portal = clients["portal"].get(f"/v1/subjects/{SUBJECT}/tags").json()
    rights = clients["rights"].get(f"/v1/subjects/{SUBJECT}/tags").json()
    assert portal["include_sensitive"] is False and rights["include_sensitive"] is True
    assert [t["code"] for t in portal["tags"]] == ["life_event.marriage"]
    assert {t["code"] for t in rights["tags"]} == {"life_event.marriage", "crowd.hardship"}
    assert portal["tags"][0]["evidence_zh"] == "婚姻登记 2026-05-03"


def test_delete_and_restore_a_tag(live):
    clients, _, db, _ = live
    rights = clients["rights"]
    resp = rights.delete(f"/v1/subjects/{SUBJECT}/tags/life_event.marriage")
    assert resp.status_code == 200 and resp.json()["status"] == "deleted"
    assert "life_event.marriage" not in [t["code"] for t in rights.get(f"/v1/subjects/{SUBJECT}/tags").json()["tags"]]
    assert [s["code"] for s in list_suppressed(db, SUBJECT)] == ["life_event.marriage"]
    assert rights.post(f"/v1/subjects/{SUBJECT}/tags/life_event.marriage/restore").json()["status"] == "restored"
    missing = rights.delete(f"/v1/subjects/{SUBJECT}/tags/life_event.birth")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert rights.delete(f"/v1/subjects/{SUBJECT}/tags/not-a-code").status_code == 422


def test_profile_is_for_profile_scope_and_includes_sensitive_fields(live):
    clients, _, _, _ = live
    resp = clients["rights"].get(f"/v1/subjects/{SUBJECT}/profile")
    assert resp.status_code == 200
    assert resp.json()["subject_id"] == SUBJECT and resp.json()["low_income"] is True
    assert clients["portal"].get(f"/v1/subjects/{SUBJECT}/profile").status_code == 403
    assert clients["rights"].get("/v1/subjects/P9999999/profile").status_code == 404


def test_reads_and_changes_are_audited_with_key_action_subject_and_time(live):
    clients, key_ids, db, _ = live
    subject = "P0000777"
    clients["portal"].get(f"/v1/subjects/{subject}/tags")
    clients["rights"].get(f"/v1/subjects/{subject}/profile")
    clients["portal"].put(f"/v1/subjects/{subject}/preferences", json={"personalisation": False})
    clients["rights"].delete(f"/v1/subjects/{subject}/tags/crowd.elderly")
    clients["portal"].get(f"/v1/subjects/{subject}/feed")  # a feed read is not a profile or tag read
    records = list_audit(db, subject=subject)
    got = [(r["key_id"], r["action"], r["outcome"]) for r in reversed(records)]
    assert got == [
        (key_ids["portal"], "tags.read", "ok"),
        (key_ids["rights"], "profile.read", "not_found"),
        (key_ids["portal"], "preferences.personalisation_off", "ok"),
        (key_ids["rights"], "tag.delete", "not_found"),
    ]
    assert all(r["at"].endswith("+00:00") and r["request_id"] for r in records)
    # Only ids in the log: no evidence text, no attribute values.
    dump = json.dumps(list_audit(db, limit=1000), ensure_ascii=False)
    assert "婚姻" not in dump and "静安" not in dump


def _alert(settings, db, subject_id: str) -> int:
    """A delivered in-app alert the way the nightly run makes one: a permit 30 days from expiry, the rules run,
    the delivery releases it to the portal's inbox."""
    settings.reminder_rules_file.write_text(
        "rules:\n  - id: hk_macau_permit_expiry\n    version: 1\n    kind: licence_expiry\n"
        "    licence_types: [hk_macau_permit]\n    stages_days: [30]\n    renewal_item: SH-CRJ-0002\n"
        "    audience: {subject_type: person}\n"
        "    message: {zh: \"您的{licence_name_zh}{expiry_zh}\", en: \"Your {licence_name_en} {expiry_en}\"}\n"
        "    channels: [in_app]\n    statutory: true\n", encoding="utf-8")
    as_of = date(2026, 6, 1)
    put_rows(settings, db, "people", [{"person_id": subject_id, "birth_date": date(1985, 1, 1)}])
    put_rows(settings, db, "licenses", [{"license_id": "L1", "holder_id": subject_id, "license_type": "hk_macau_permit",
                                         "issued_on": date(2020, 1, 1), "expires_on": as_of + timedelta(days=30)}])
    evaluate_alerts(settings, db, as_of)
    assert deliver(settings, db, datetime(2026, 6, 1, 4, 0, tzinfo=timezone.utc)).in_app == 1
    [alert] = list_alerts(db, subject_id)
    return alert["alert_id"]


def test_alerts_list_read_dismiss(live):
    clients, key_ids, db, settings = live
    alert_id = _alert(settings, db, SUBJECT)
    portal = clients["portal"]
    listed = portal.get(f"/v1/subjects/{SUBJECT}/alerts").json()["alerts"]
    assert [a["alert_id"] for a in listed] == [alert_id] and listed[0]["read"] is False
    assert listed[0]["item_ids"] == ["SH-CRJ-0002"]
    read = portal.post(f"/v1/alerts/{alert_id}/read")
    assert read.status_code == 200 and read.json()["read"] is True
    assert portal.post(f"/v1/alerts/{alert_id}/dismiss").json()["dismissed_at"]
    assert portal.get(f"/v1/subjects/{SUBJECT}/alerts").json()["alerts"] == []
    missing = portal.post("/v1/alerts/999999/read")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert portal.post("/v1/alerts/0/read").status_code == 422
    actions = [(r["action"], r["outcome"]) for r in reversed(list_audit(db, key_id=key_ids["portal"]))
               if r["subject"] and r["subject"].startswith("alert:")]
    assert actions == [("alert.read", "ok"), ("alert.dismiss", "ok"), ("alert.read", "not_found")]

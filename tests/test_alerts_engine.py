"""Alert evaluation with the shipped rules on hand-made registries: every trigger kind, dedup across reruns and
overlapping runs, catch-up to the latest stage, supersession, cancellation, personalisation, dry run."""

from __future__ import annotations

import json
import threading
import textwrap
from datetime import date, timedelta

import polars as pl
import pytest

from notifier.delivery import deliver
from notifier.engine import dry_run, evaluate_alerts
from notifier.outbox import list_alerts, stored_alerts
from notifier.rules import install_rules
from testsupport.registries import delete_rows, put_rows
from data.citizen import write_preferences
from data.settings import load_settings
from tagging import drop_tags, put_tags, tag_row
from yiwang.migrations import open_db

AS_OF = date(2026, 3, 2)


def alerts(db, rule_id=None):
    rows = stored_alerts(db.conn)
    if rule_id:
        rows = rows.filter(pl.col("rule_id") == rule_id)
    return rows.select("rule_id", "subject_id", "object_id", "stage", "status", "item_ids", "message_zh").to_dicts()


def put_tag(db, subject_id, code, valid_from, sensitive=0):
    put_tags(db, [tag_row(subject_id, code, valid_from, sensitive=sensitive, as_of=AS_OF)])


def set_prefs(db, subject_id, personalisation=1, channels=("in_app",)):
    write_preferences(db.conn, subject_id, bool(personalisation), list(channels))


@pytest.fixture
def resident(settings, db):
    """P001 in 静安区 holding a HK/Macau permit (L1) and a passport (L2)."""
    put_rows(settings, db, "people", [{"person_id": "P001", "birth_date": date(1990, 5, 1), "household_id": "H1"}])
    return "P001"


def permit(settings, db, days_left, license_id="L1", holder="P001", license_type="hk_macau_permit"):
    expires = AS_OF + timedelta(days=days_left)
    put_rows(settings, db, "licenses", [{"license_id": license_id, "holder_id": holder, "license_type": license_type,
                                         "issued_on": expires - timedelta(days=3650), "expires_on": expires}])
    return expires


def test_licence_ladder_creates_one_alert_with_the_renewal_item(settings, db, resident):
    expires = permit(settings, db, 30)
    s = evaluate_alerts(settings, db, AS_OF)
    [a] = alerts(db, "hk_macau_permit_expiry")
    assert (a["subject_id"], a["object_id"], a["stage"], a["status"]) == ("P001", "L1", "30", "pending")
    assert json.loads(a["item_ids"]) == ["SH-CRJ-0002"]
    assert expires.isoformat() in a["message_zh"] and "往来港澳通行证换发" in a["message_zh"]
    assert s.created == 1
    # Rerunning (same day, next day) creates nothing new.
    assert evaluate_alerts(settings, db, AS_OF).created == 0
    assert evaluate_alerts(settings, db, AS_OF + timedelta(days=1)).created == 0
    assert len(alerts(db)) == 1


def test_overlapping_runs_create_each_alert_once(settings, db, resident):
    put_rows(settings, db, "people", [{"person_id": f"Q{i}", "birth_date": date(1980, 1, 1)} for i in range(20)])
    for i in range(20):
        permit(settings, db, 5 + i, license_id=f"L{i}", holder=f"Q{i}",
               license_type="passport" if i % 2 else "hk_macau_permit")
    errors = []

    def run():
        conn_db = open_db(settings.db_path)
        try:
            evaluate_alerts(settings, conn_db, AS_OF)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            conn_db.conn.close()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    keys = [(a["rule_id"], a["object_id"], a["stage"]) for a in alerts(db)]
    assert len(keys) == 20 == len(set(keys))


def test_catch_up_sends_only_the_latest_due_stage(settings, db, resident):
    permit(settings, db, 5)
    evaluate_alerts(settings, db, AS_OF)
    assert [(a["stage"], a["status"]) for a in alerts(db)] == [("7", "pending")]


def test_ladder_moves_on_and_supersedes_an_undelivered_earlier_stage(settings, db, resident):
    permit(settings, db, 80)
    evaluate_alerts(settings, db, AS_OF)
    assert [(a["stage"], a["status"]) for a in alerts(db)] == [("90", "pending")]
    evaluate_alerts(settings, db, AS_OF + timedelta(days=55))  # 25 days left
    assert [(a["stage"], a["status"]) for a in alerts(db)] == [("90", "superseded"), ("30", "pending")]
    # A delivered stage is history, not superseded: deliver the 30-day one, then reach 7 days.
    deliver(settings, db)
    evaluate_alerts(settings, db, AS_OF + timedelta(days=75))  # 5 days left
    assert [(a["stage"], a["status"]) for a in alerts(db)] == [("90", "superseded"), ("30", "delivered"),
                                                               ("7", "pending")]
    # Expired licences get no new stage.
    assert evaluate_alerts(settings, db, AS_OF + timedelta(days=81)).created == 0


def test_renewal_cancels_the_pending_alert_and_resolves_a_delivered_one(settings, db, resident):
    permit(settings, db, 30, license_id="L1")
    permit(settings, db, 60, license_id="L2", license_type="passport")
    evaluate_alerts(settings, db, AS_OF)
    deliver(settings, db)  # both shown in-app
    assert {a["object_id"]: a["status"] for a in alerts(db)} == {"L1": "delivered", "L2": "delivered"}
    # Next export: the passport is renewed (a newer passport expiring later), the permit licence row is gone.
    put_rows(settings, db, "licenses", [{"license_id": "L2b", "holder_id": "P001", "license_type": "passport",
                                         "issued_on": AS_OF, "expires_on": AS_OF + timedelta(days=3650)}])
    delete_rows(settings, db, "licenses", ["L1"])
    s = evaluate_alerts(settings, db, AS_OF + timedelta(days=1))
    assert s.resolved == 2 and s.created == 0
    assert list_alerts(db, "P001") == []


def test_renewal_cancels_a_pending_alert(settings, db, resident):
    permit(settings, db, 30)
    evaluate_alerts(settings, db, AS_OF)
    put_rows(settings, db, "licenses", [{"license_id": "L9", "holder_id": "P001", "license_type": "hk_macau_permit",
                                         "issued_on": AS_OF, "expires_on": AS_OF + timedelta(days=3650)}])
    s = evaluate_alerts(settings, db, AS_OF + timedelta(days=1))
    assert s.cancelled == 1
    assert [a["status"] for a in alerts(db)] == ["cancelled"]
    # Delivery never releases it.
    assert deliver(settings, db).released == 0


def test_tag_gained_newborn_bundle_and_tag_deletion(settings, db, resident):
    put_rows(settings, db, "people", [{"person_id": "P002", "birth_date": date(1988, 1, 1), "household_id": "H2"}])
    put_tag(db, "P001", "life_event.birth", AS_OF - timedelta(days=3))
    put_tag(db, "P002", "life_event.birth", AS_OF - timedelta(days=300))  # long ago: not "newly" gained
    evaluate_alerts(settings, db, AS_OF)
    [a] = alerts(db, "newborn_bundle")
    assert a["subject_id"] == "P001" and a["object_id"] == "life_event.birth"
    assert json.loads(a["item_ids"]) == ["SH-WJW-0001", "SH-GAJ-0006", "SH-YBJ-0003", "SH-YBJ-0007"]
    assert "出生医学证明办理" in a["message_zh"] and "生育津贴申领" in a["message_zh"]
    # The citizen deletes the tag (Art. 17): the pending offer is cancelled.
    drop_tags(db, "P001")
    evaluate_alerts(settings, db, AS_OF + timedelta(days=1))
    assert alerts(db, "newborn_bundle")[0]["status"] == "cancelled"


def test_personalisation_off_stops_offers_but_not_statutory_notices(settings, db, resident):
    set_prefs(db, "P001", personalisation=0)
    permit(settings, db, 20)
    put_tag(db, "P001", "life_event.birth", AS_OF - timedelta(days=1))
    evaluate_alerts(settings, db, AS_OF)
    assert [a["rule_id"] for a in alerts(db)] == ["hk_macau_permit_expiry"]
    # Switched off after an offer was created: the offer is cancelled at delivery, the notice still goes.
    set_prefs(db, "P001", personalisation=1)
    put_tag(db, "P001", "life_event.birth", AS_OF - timedelta(days=1))
    evaluate_alerts(settings, db, AS_OF)
    set_prefs(db, "P001", personalisation=0)
    deliver(settings, db)
    assert [a["rule_id"] for a in list_alerts(db, "P001")] == ["hk_macau_permit_expiry"]


def test_calendar_annual_report_window(settings, db):
    put_rows(settings, db, "enterprises", [
        {"enterprise_id": "E1", "founded_on": date(2019, 4, 1)},
        {"enterprise_id": "E2", "founded_on": date(2026, 2, 1)},  # registered this year: nothing to report yet
    ])
    evaluate_alerts(settings, db, date(2025, 12, 31))
    assert alerts(db, "enterprise_annual_report") == []
    evaluate_alerts(settings, db, AS_OF)
    [a] = alerts(db, "enterprise_annual_report")
    assert (a["subject_id"], a["object_id"], a["stage"]) == ("E1", "2026", "2026-01-01")
    assert json.loads(a["item_ids"]) == ["SH-SCJGJ-0026"] and "2026-06-30" in a["message_zh"]
    evaluate_alerts(settings, db, date(2026, 6, 30))
    assert len(alerts(db, "enterprise_annual_report")) == 1
    # The window closes: the still-undelivered reminder is withdrawn.
    evaluate_alerts(settings, db, date(2026, 7, 1))
    assert alerts(db, "enterprise_annual_report")[0]["status"] == "cancelled"


def test_age_milestones_school_for_parents_and_senior_card_for_self(settings, db):
    put_rows(settings, db, "people", [
        {"person_id": "C1", "birth_date": date(2020, 2, 20), "household_id": "H9", "district": "静安区"},
        {"person_id": "M1", "birth_date": date(1991, 7, 1), "household_id": "H9", "district": "静安区"},
        {"person_id": "F1", "birth_date": date(1990, 3, 3), "household_id": "H9", "district": "静安区"},
        {"person_id": "S1", "birth_date": date(2009, 1, 1), "household_id": "H9", "district": "静安区"},  # 17
        {"person_id": "G1", "birth_date": date(1966, 2, 10), "household_id": "H10", "district": "浦东新区"},
        {"person_id": "C2", "birth_date": date(2019, 1, 1), "household_id": "H11"},  # turned 6 long ago
    ])
    evaluate_alerts(settings, db, AS_OF)
    school = alerts(db, "primary_school_enrollment")
    assert sorted((a["subject_id"], a["object_id"]) for a in school) == [("F1", "C1"), ("M1", "C1")]
    assert json.loads(school[0]["item_ids"]) == ["SH310106-JW-0502"]  # 静安区's own item
    assert "2026-02-20" in school[0]["message_zh"]
    [senior] = alerts(db, "senior_card_at_60")
    assert senior["subject_id"] == senior["object_id"] == "G1"
    assert json.loads(senior["item_ids"]) == ["SH310115-MZJ-0506"]  # 浦东新区
    # Outside the window the pending ones are withdrawn.
    evaluate_alerts(settings, db, AS_OF + timedelta(days=100))
    assert {a["status"] for a in alerts(db)} == {"cancelled"}


def test_audience_tags_and_disabled_rules(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(textwrap.dedent("""\
        rules:
          - id: driver_licence
            version: 1
            kind: licence_expiry
            licence_types: [driving_licence]
            stages_days: [30]
            audience: {subject_type: person, tags_any: [occupation.driver], tags_none: [crowd.elderly]}
            message: {zh: "{item_name}", en: "{item_name}"}
            channels: [in_app]
            statutory: true
        """), encoding="utf-8")
    settings = load_settings(home=tmp_path / "home", id_hash_key="k", reminder_rules_file=rules)
    db = open_db(settings.db_path)
    put_rows(settings, db, "people", [{"person_id": p, "birth_date": date(1970, 1, 1)} for p in ("D1", "D2", "D3")])
    for p in ("D1", "D2", "D3"):
        permit(settings, db, 10, license_id=f"X{p}", holder=p, license_type="driving_licence")
    put_tag(db, "D1", "occupation.driver", AS_OF)
    put_tag(db, "D2", "occupation.driver", AS_OF)
    put_tag(db, "D2", "crowd.elderly", AS_OF)
    evaluate_alerts(settings, db, AS_OF)
    [a] = alerts(db)
    assert a["subject_id"] == "D1" and json.loads(a["item_ids"]) == ["SH-JJZD-0002"]  # renewal_item auto
    install_rules(settings, db, rules.read_text().replace("statutory: true", "statutory: true\n    enabled: false"))
    s = evaluate_alerts(settings, db, AS_OF)
    assert s.rules == 0 and s.cancelled == 1
    db.conn.close()


def test_dry_run_counts_and_writes_nothing(settings, db, resident):
    put_rows(settings, db, "people", [{"person_id": f"Q{i}", "birth_date": date(1980, 1, 1)} for i in range(7)])
    for i in range(7):
        permit(settings, db, 3 + i, license_id=f"Q{i}", holder=f"Q{i}")
    r = dry_run(settings, db, "hk_macau_permit_expiry", AS_OF, sample=3)
    assert (r.subjects, r.candidates, r.new, len(r.sample)) == (7, 7, 7, 3)
    assert alerts(db) == []
    evaluate_alerts(settings, db, AS_OF, rule_ids=["hk_macau_permit_expiry"])
    assert dry_run(settings, db, "hk_macau_permit_expiry", AS_OF).new == 0

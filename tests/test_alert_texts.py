"""What a citizen reads in an alert and in a tag's evidence: natural wording on the day a licence expires, English
texts without Chinese item names, the zh and en evidence each in its own language, and a delivery time that is
the real time of delivery."""

from __future__ import annotations

import json
import re
from datetime import date, datetime, timedelta, timezone

import polars as pl
import pytest

from notifier.delivery import deliver
from notifier.engine import evaluate_alerts
from notifier.outbox import stored_alerts, stored_deliveries
from testsupport.registries import put_rows
from data.citizen import write_preferences
from tagging import put_tags, tag_row
from taggers.store import read_tags

AS_OF = date(2026, 12, 6)
CJK = re.compile(r"[\u3000-\u303f\u3400-\u9fff\uff00-\uffef]")


def _messages(db, rule_id: str) -> dict[str, tuple[str, str]]:
    alerts = stored_alerts(db.conn).filter(pl.col("rule_id") == rule_id)
    return {o: (zh, en) for o, zh, en in alerts.select("object_id", "message_zh", "message_en").iter_rows()}


@pytest.fixture
def permits(settings, db):
    """Three residents whose HK/Macau permits expire today, tomorrow and in 30 days; one enterprise's food
    licence expiring today."""
    put_rows(settings, db, "people", [{"person_id": f"P00{i}", "birth_date": date(1990, 5, 1), "district": "静安区"}
                                      for i in range(3)])
    put_rows(settings, db, "licenses", [
        {"license_id": f"L{d}", "holder_id": f"P00{i}", "license_type": "hk_macau_permit",
         "issued_on": AS_OF - timedelta(days=3650), "expires_on": AS_OF + timedelta(days=d)}
        for i, d in enumerate((0, 1, 30))])
    put_rows(settings, db, "enterprises", [{"enterprise_id": "E001", "name": "企业", "industry": "H",
                                            "district": "静安区", "founded_on": date(2015, 1, 1), "employees": 5}])
    put_rows(settings, db, "licenses", [{"license_id": "F0", "holder_id": "E001",
                                         "license_type": "food_business_licence",
                                         "issued_on": AS_OF - timedelta(days=1800), "expires_on": AS_OF}])
    evaluate_alerts(settings, db, AS_OF)
    return _messages(db, "hk_macau_permit_expiry"), _messages(db, "food_business_licence_expiry")


def test_a_licence_expiring_today_reads_today_not_zero_days_left(permits):
    person, enterprise = permits
    zh, en = person["L0"]
    assert "今天" in zh and "还有0天" not in zh and "0天" not in zh, zh
    assert "expires today" in en and "0 days" not in en, en
    zh, en = enterprise["F0"]
    assert "今天" in zh and "0天" not in zh and "expires today" in en, (zh, en)


def test_a_licence_expiring_tomorrow_and_later(permits):
    person, _ = permits
    zh, en = person["L1"]
    assert "明天" in zh and "1天" not in zh and "tomorrow" in en and "1 days" not in en, (zh, en)
    zh, en = person["L30"]
    expires = (AS_OF + timedelta(days=30)).isoformat()
    assert f"将于{expires}到期（还有30天）" in zh, zh
    assert f"expires on {expires} (30 days left)" in en, en


def test_english_messages_hold_no_chinese(settings, db, permits):
    """Every shipped rule's English text, item names included, is English (the tag rule and calendar rule too)."""
    put_rows(settings, db, "people", [{"person_id": "P100", "birth_date": AS_OF - timedelta(days=6 * 365 + 10),
                                       "district": "静安区", "household_id": "H1"},
                                      {"person_id": "P101", "birth_date": date(1966, 12, 1), "district": "静安区",
                                       "household_id": "H1"}])
    put_rows(settings, db, "licenses", [{"license_id": f"X{t}", "holder_id": "P101", "license_type": t,
                                         "issued_on": date(2020, 1, 1), "expires_on": AS_OF + timedelta(days=20)}
                                        for t in ("passport", "resident_id_card", "driving_licence",
                                                  "residence_permit")])
    put_tags(db, [tag_row("P101", "life_event.birth", AS_OF - timedelta(days=5), as_of=AS_OF)])
    evaluate_alerts(settings, db, AS_OF)
    evaluate_alerts(settings, db, date(2027, 3, 1))  # the annual-report window
    rows = stored_alerts(db.conn).select("rule_id", "message_en", "message_zh", "item_ids").rows()
    assert {"newborn_bundle", "enterprise_annual_report", "primary_school_enrollment", "senior_card_at_60",
            "passport_expiry", "food_business_licence_expiry"} <= {r[0] for r in rows}
    for rule_id, en, zh, items in rows:
        assert not CJK.search(en), (rule_id, en)
        assert CJK.search(zh), (rule_id, zh)
        assert json.loads(items), rule_id


def test_delivered_at_is_the_real_time_of_delivery(settings, db, permits):
    """Delivering 'as of' a later day (the nightly run passes as-of + 1 h) still records when it really happened."""
    before = datetime.now(timezone.utc).replace(microsecond=0)
    ahead = before + timedelta(days=3, hours=1)
    summary = deliver(settings, db, ahead)
    after = datetime.now(timezone.utc)
    assert summary.released >= 1
    stamps = [datetime.fromisoformat(t) for t in
              stored_deliveries(db.conn).filter(pl.col("status") == "delivered")["delivered_at"]]
    assert stamps
    for s in stamps:
        assert before <= s <= after, (s, before, after)


def test_webhook_delivered_at_is_the_real_time_of_delivery(tmp_path):
    from testsupport.webhook_receiver import Receiver
    from data.settings import load_settings
    from yiwang.migrations import open_db

    with Receiver() as receiver:
        settings = load_settings(home=tmp_path / "home", id_hash_key="k", webhook_url=receiver.url,
                                 webhook_timeout_s=2.0, quiet_hours="22:00-08:00")
        db = open_db(settings.db_path)
        put_rows(settings, db, "people", [{"person_id": "P1", "birth_date": date(1985, 1, 1)}])
        put_rows(settings, db, "licenses", [{"license_id": "L1", "holder_id": "P1", "license_type": "passport",
                                             "issued_on": date(2020, 1, 1), "expires_on": AS_OF + timedelta(days=20)}])
        write_preferences(db.conn, "P1", True, ["webhook"])
        evaluate_alerts(settings, db, AS_OF)
        before = datetime.now(timezone.utc).replace(microsecond=0)
        noon_ahead = datetime.combine(before.date() + timedelta(days=3), datetime.min.time(), timezone.utc) \
            + timedelta(hours=4)  # 12:00 in Shanghai, outside quiet hours
        summary = deliver(settings, db, noon_ahead)
        after = datetime.now(timezone.utc)
        assert summary.webhook_delivered == 1, summary
        [stamp] = stored_deliveries(db.conn).filter(pl.col("channel") == "webhook")["delivered_at"].to_list()
        db.conn.close()
    assert before <= datetime.fromisoformat(stamp) <= after, (stamp, before, after)


def test_registered_occupation_evidence_is_in_each_language(settings, db):
    """zh evidence names the occupation in Chinese, en evidence in English (the taxonomy's names)."""
    from taggers import run_taggers
    from profiler import build_profiles

    put_rows(settings, db, "people", [{"person_id": "P200", "birth_date": date(1985, 3, 1), "district": "静安区",
                                       "occupation": "driver"},
                                      {"person_id": "P201", "birth_date": date(1980, 3, 1), "district": "静安区",
                                       "occupation": "it_professional"}])
    build_profiles(settings, db, AS_OF)
    run_taggers(settings, db, AS_OF)
    tags = read_tags(db)
    rows = {(s, c): (zh, en) for s, c, zh, en in tags.filter(pl.col("code").str.starts_with("occupation."))
            .select("subject_id", "code", "evidence_zh", "evidence_en").iter_rows()}
    assert rows[("P200", "occupation.driver")] == ("登记职业：驾驶员", "registered occupation: Professional driver")
    assert rows[("P201", "occupation.it_professional")] == ("登记职业：信息技术从业人员",
                                                            "registered occupation: IT professional")
    for zh, en in tags.select("evidence_zh", "evidence_en").iter_rows():
        assert not CJK.search(en), en
        assert not re.search(r"[a-z]{3,}", zh), zh


def test_every_item_a_shipped_reminder_names_has_an_english_name(settings):
    """data/item_names_en.csv covers the items of the shipped rules (district variants too) and every licence's
    renewal item, and matches the catalogue it translates."""
    import yaml

    from data.reference import load_catalog

    names = pl.read_csv(settings.data_dir / "item_names_en.csv", infer_schema=False)
    cat = load_catalog(settings.data_dir).select("item_id", "name")
    assert names.join(cat, on="item_id", how="anti").is_empty()
    assert names.join(cat, on="item_id").filter(pl.col("name") != pl.col("name_zh")).is_empty()
    assert not names.filter(pl.col("name_en").str.contains(CJK.pattern) | pl.col("name_en").is_null()).height
    rules = yaml.safe_load((settings.data_dir / "reminder_rules.yaml").read_text(encoding="utf-8"))["rules"]
    wanted = set()
    for r in rules:
        for item in r.get("items", []) + ([r["renewal_item"]] if r.get("renewal_item", "auto") != "auto" else []):
            if "{district}" in item:
                pre, post = item.split("{district}")
                wanted |= set(cat.filter(pl.col("item_id").str.contains(f"^{pre}\\d{{6}}{post}$"))["item_id"])
            else:
                wanted.add(item)
    lic = pl.read_csv(settings.data_dir / "license_types.csv", infer_schema=False)
    wanted |= set(lic["renewal_item_id"].drop_nulls())
    assert len(wanted) > 40
    assert wanted - set(names["item_id"]) == set()

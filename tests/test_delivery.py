"""Delivery against a real webhook receiver on 127.0.0.1: in-app reads, idempotency key, retries with
exponential backoff, dead letters, hangs, quiet hours, the daily cap and the subject's channel preferences."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone

import polars as pl
import pytest

from notifier.delivery import deliver, idempotency_key, in_quiet_hours
from notifier.engine import evaluate_alerts
from notifier.outbox import (
    dismiss, list_alerts, mark_read, stored_alerts, stored_dead_letters, stored_deliveries,
)
from testsupport.webhook_receiver import Receiver
from testsupport.registries import put_rows
from data.citizen import write_preferences
from data.errors import NotFound
from data.settings import load_settings
from yiwang.migrations import open_db

AS_OF = date(2026, 3, 2)
NOON = datetime(2026, 3, 2, 4, 0, tzinfo=timezone.utc)  # 12:00 in Shanghai


@pytest.fixture
def receiver():
    with Receiver(hang_s=3.0) as r:
        yield r


@pytest.fixture
def make_store(tmp_path, receiver):
    """A store whose webhook points at the receiver; keyword overrides change settings."""
    opened = []

    def make(**overrides):
        base = dict(home=tmp_path / "home", id_hash_key="k", webhook_url=receiver.url, webhook_timeout_s=0.5,
                    webhook_backoff_base_s=10, webhook_max_attempts=3, quiet_hours="22:00-08:00", daily_alert_cap=3)
        settings = load_settings(**{**base, **overrides})
        db = open_db(settings.db_path)
        opened.append(db)
        return settings, db

    yield make
    for db in opened:
        db.conn.close()


def set_prefs(db, subject_id, personalisation=1, channels=("in_app", "webhook")):
    write_preferences(db.conn, subject_id, bool(personalisation), list(channels))


def holder(settings, db, person_id, *licences):
    """A person holding licences given as (licence_id, type, days_left)."""
    put_rows(settings, db, "people", [{"person_id": person_id, "birth_date": date(1985, 1, 1)}])
    put_rows(settings, db, "licenses", [
        {"license_id": lid, "holder_id": person_id, "license_type": t, "issued_on": date(2020, 1, 1),
         "expires_on": AS_OF + timedelta(days=d)} for lid, t, d in licences
    ])


def webhook_row(db, alert_id):
    rows = (stored_deliveries(db.conn).filter((pl.col("alert_id") == alert_id) & (pl.col("channel") == "webhook"))
            .select("status", "attempts", "next_attempt_at", "last_error").rows())
    return rows[0] if rows else None


def test_in_app_by_default_read_and_dismiss(make_store, receiver):
    settings, db = make_store()
    holder(settings, db, "P1", ("L1", "hk_macau_permit", 30))
    evaluate_alerts(settings, db, AS_OF)
    assert list_alerts(db, "P1") == []  # not released yet
    s = deliver(settings, db, NOON)
    assert (s.released, s.in_app, s.webhook_sent) == (1, 1, 0)  # no preferences row: in-app only
    [a] = list_alerts(db, "P1")
    assert a["item_ids"] == ["SH-CRJ-0002"] and a["statutory"] and not a["read"] and a["status"] == "delivered"
    assert mark_read(db, a["alert_id"])["read"] is True
    dismiss(db, a["alert_id"])
    assert list_alerts(db, "P1") == [] and len(list_alerts(db, "P1", include_dismissed=True)) == 1
    with pytest.raises(NotFound):
        mark_read(db, 999)
    assert receiver.requests == []


def test_webhook_carries_the_idempotency_key(make_store, receiver):
    settings, db = make_store()
    holder(settings, db, "P1", ("L1", "hk_macau_permit", 30))
    set_prefs(db, "P1")
    evaluate_alerts(settings, db, AS_OF)
    s = deliver(settings, db, NOON)
    assert (s.webhook_sent, s.webhook_delivered) == (1, 1)
    [req] = receiver.requests
    assert req["key"] == req["payload_key"] == idempotency_key("hk_macau_permit_expiry", "P1", "L1", "30", "webhook")
    assert stored_alerts(db.conn)["status"][0] == "delivered"
    assert deliver(settings, db, NOON + timedelta(hours=1)).webhook_sent == 0


def test_retries_back_off_exponentially_with_the_same_key(make_store, receiver):
    settings, db = make_store(webhook_max_attempts=5)
    holder(settings, db, "P1", ("L1", "hk_macau_permit", 30))
    set_prefs(db, "P1", channels=("webhook",))
    evaluate_alerts(settings, db, AS_OF)
    receiver.script = [500, 503, 200]
    t = NOON
    assert deliver(settings, db, t).webhook_retry == 1
    status, attempts, next_at, error = webhook_row(db, 1)
    assert (status, attempts, error) == ("pending", 1, "HTTP 500")
    assert datetime.fromisoformat(next_at) == t + timedelta(seconds=10)
    assert deliver(settings, db, t + timedelta(seconds=9)).webhook_sent == 0  # not due yet
    t += timedelta(seconds=10)
    assert deliver(settings, db, t).webhook_retry == 1
    assert datetime.fromisoformat(webhook_row(db, 1)[2]) == t + timedelta(seconds=20)  # 10 * 2^1
    t += timedelta(seconds=20)
    assert deliver(settings, db, t).webhook_delivered == 1
    assert webhook_row(db, 1)[:2] == ("delivered", 3)
    assert len({r["key"] for r in receiver.requests}) == 1 and len(receiver.requests) == 3
    assert [r["attempt"] for r in receiver.requests] == ["1", "2", "3"]


def test_dead_letter_after_max_attempts_and_hangs_count_as_failures(make_store, receiver):
    settings, db = make_store(webhook_max_attempts=3, webhook_backoff_base_s=0)
    holder(settings, db, "P1", ("L1", "hk_macau_permit", 30))
    holder(settings, db, "P2", ("L2", "passport", 30))
    set_prefs(db, "P1", channels=("webhook",))
    set_prefs(db, "P2", channels=("in_app", "webhook"))
    evaluate_alerts(settings, db, AS_OF)
    receiver.hang_rate = 1.0  # every call hangs past the 0.5 s timeout
    s = deliver(settings, db, NOON)
    assert s.webhook_dead == 2 and s.webhook_sent == 6
    dead = stored_dead_letters(db.conn).select("alert_id", "attempts", "last_error").rows()
    assert [(a, n) for a, n, _ in dead] == [(1, 3), (2, 3)] and all("Timeout" in e for _, _, e in dead)
    status = dict(stored_alerts(db.conn).select("subject_id", "status").rows())
    # P1 accepted only the webhook: nothing reached them. P2 still has it in-app.
    assert status == {"P1": "dead", "P2": "delivered"}
    assert deliver(settings, db, NOON + timedelta(days=1)).webhook_sent == 0


def test_quiet_hours_hold_webhooks_not_in_app(make_store, receiver):
    settings, db = make_store()
    holder(settings, db, "P1", ("L1", "hk_macau_permit", 30))
    set_prefs(db, "P1")
    evaluate_alerts(settings, db, AS_OF)
    night = datetime(2026, 3, 2, 15, 30, tzinfo=timezone.utc)  # 23:30 in Shanghai
    assert in_quiet_hours("22:00-08:00", night) and not in_quiet_hours("22:00-08:00", NOON)
    assert not in_quiet_hours("00:00-00:00", night)
    s = deliver(settings, db, night)
    assert s.quiet_hours and s.in_app == 1 and s.webhook_sent == 0 and receiver.requests == []
    early = datetime(2026, 3, 2, 23, 59, tzinfo=timezone.utc)  # 07:59 next morning
    assert deliver(settings, db, early).webhook_sent == 0
    assert deliver(settings, db, early + timedelta(minutes=1)).webhook_delivered == 1


def test_daily_cap_releases_the_most_important_first(make_store, receiver):
    settings, db = make_store(daily_alert_cap=2)
    holder(settings, db, "P1", ("L1", "hk_macau_permit", 30), ("L2", "passport", 20),
           ("L3", "driving_licence", 10), ("L4", "resident_id_card", 5))
    put_rows(settings, db, "people", [{"person_id": "P1", "birth_date": date(1966, 2, 1), "household_id": "H"}])
    evaluate_alerts(settings, db, AS_OF)  # 4 licence notices (high) + the senior card offer (normal)
    assert stored_alerts(db.conn).height == 5
    s = deliver(settings, db, NOON)
    assert (s.released, s.deferred_by_cap) == (2, 3)
    assert deliver(settings, db, NOON + timedelta(hours=3)).released == 0  # same local day
    day2 = deliver(settings, db, NOON + timedelta(days=1))
    assert (day2.released, day2.deferred_by_cap) == (2, 1)
    assert deliver(settings, db, NOON + timedelta(days=2)).released == 1
    # The senior-card offer (normal priority) came last.
    last = (stored_alerts(db.conn).sort("released_on", "alert_id", descending=True, nulls_last=True)
            .select("rule_id").head(1).rows()[0])
    assert last[0] == "senior_card_at_60"
    assert len(list_alerts(db, "P1")) == 5


def test_channel_preferences_and_statutory_fallback(make_store, receiver):
    settings, db = make_store()
    put_rows(settings, db, "people", [{"person_id": "P1", "birth_date": date(1966, 2, 1)}])
    holder(settings, db, "P2", ("L2", "hk_macau_permit", 30))
    put_rows(settings, db, "people", [{"person_id": "P2", "birth_date": date(1966, 2, 1)}])
    set_prefs(db, "P1", channels=("webhook",))  # the senior-card offer is in-app only: no channel left
    set_prefs(db, "P2", channels=("sms_only_someday",))  # accepts nothing we have
    evaluate_alerts(settings, db, AS_OF)
    s = deliver(settings, db, NOON)
    by = {f"{r}:{s}": (st, why) for r, s, st, why in
          stored_alerts(db.conn).select("rule_id", "subject_id", "status", "status_reason").iter_rows()}
    assert by["senior_card_at_60:P1"] == ("cancelled", "no channel the subject accepts")
    assert by["senior_card_at_60:P2"] == ("cancelled", "no channel the subject accepts")
    # The statutory notice still reaches P2, in the portal's own inbox.
    assert by["hk_macau_permit_expiry:P2"][0] == "delivered"
    assert [a["rule_id"] for a in list_alerts(db, "P2")] == ["hk_macau_permit_expiry"]
    assert s.cancelled_by_preferences == 2 and receiver.requests == []


def test_withdrawn_alert_is_not_sent(make_store, receiver):
    settings, db = make_store()
    holder(settings, db, "P1", ("L1", "hk_macau_permit", 30))
    set_prefs(db, "P1")
    evaluate_alerts(settings, db, AS_OF)
    night = datetime(2026, 3, 2, 15, 30, tzinfo=timezone.utc)
    deliver(settings, db, night)  # in-app out, webhook held by quiet hours
    put_rows(settings, db, "licenses", [{"license_id": "L1b", "holder_id": "P1", "license_type": "hk_macau_permit",
                                         "issued_on": AS_OF, "expires_on": AS_OF + timedelta(days=3650)}])
    evaluate_alerts(settings, db, AS_OF + timedelta(days=1))
    assert deliver(settings, db, NOON + timedelta(days=1)).webhook_sent == 0
    assert webhook_row(db, 1)[0] == "cancelled" and receiver.requests == []


def test_concurrent_senders_send_each_alert_once(make_store, receiver):
    settings, db = make_store(webhook_concurrency=4, daily_alert_cap=100)
    for i in range(30):
        holder(settings, db, f"P{i}", (f"L{i}", "passport", 10 + i))
        set_prefs(db, f"P{i}", channels=("webhook",))
    evaluate_alerts(settings, db, AS_OF)
    s = deliver(settings, db, NOON)
    assert (s.released, s.webhook_sent, s.webhook_delivered) == (30, 30, 30)
    keys = [r["key"] for r in receiver.requests]
    assert len(keys) == len(set(keys)) == 30
    assert stored_alerts(db.conn).filter(pl.col("status") == "delivered").height == 30
    assert deliver(settings, db, NOON, max_sends=5).webhook_sent == 0

"""Citizen controls (data.citizen): the preferences with their defaults, and "not interested" dismissals."""

from __future__ import annotations

from data import citizen


def test_preferences_default_until_set_then_hold(db):
    conn = db.conn
    p = citizen.read_preferences(conn, "P1")
    assert (p.personalisation, p.channels, p.updated_at) == (True, ["in_app"], None)
    assert citizen.personalisation_on(conn, "P1") is True
    citizen.write_preferences(conn, "P1", False, ["in_app", "webhook"])
    p = citizen.read_preferences(conn, "P1")
    assert (p.personalisation, p.channels) == (False, ["in_app", "webhook"]) and p.updated_at.endswith("+00:00")
    assert citizen.personalisation_on(conn, "P1") is False
    citizen.write_preferences(conn, "P1", True, ["webhook"])
    assert citizen.read_preferences(conn, "P1").channels == ["webhook"]
    citizen.write_preferences(conn, "P2", False, ["in_app"])
    assert citizen.personalisation_off_subjects(conn)["subject_id"].to_list() == ["P2"]
    # Subjects who never chose are left out: the caller applies the defaults.
    assert citizen.preferences_of(conn, ["P1", "P2", "P3"]) == {"P1": (1, ["webhook"]), "P2": (0, ["in_app"])}
    many = [f"X{i}" for i in range(2000)] + ["P2"]  # more ids than one statement may bind
    assert citizen.preferences_of(conn, many) == {"P2": (0, ["in_app"])}


def test_dismissals_are_idempotent_and_keep_the_first_time(db):
    conn = db.conn
    first = citizen.dismiss(conn, "P1", "IT1")
    assert citizen.dismiss(conn, "P1", "IT1") == first
    citizen.dismiss(conn, "P1", "IT2")
    citizen.dismiss(conn, "P2", "IT1")
    assert citizen.dismissed_items(conn, "P1") == {"IT1", "IT2"}
    assert citizen.dismissed_items(conn, "P3") == set()
    assert sorted(citizen.all_dismissals(conn).rows()) == [("P1", "IT1"), ("P1", "IT2"), ("P2", "IT1")]


def test_feed_state_reads_switch_and_dismissals_in_one_go(db):
    conn = db.conn
    assert citizen.feed_state(conn, "P1") == (None, None)
    citizen.write_preferences(conn, "P1", False, ["in_app"])
    citizen.dismiss(conn, "P1", "IT1")
    citizen.dismiss(conn, "P1", "IT2")
    personalisation, dismissed = citizen.feed_state(conn, "P1")
    assert personalisation == 0 and set(dismissed.split("\x1f")) == {"IT1", "IT2"}

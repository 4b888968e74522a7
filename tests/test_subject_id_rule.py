"""One subject-id rule for ingest and the API (issue 10 item 15): an id ingest stores is an id the API can
serve. Ingest refuses the others with ``bad_id`` (the API side is in test_api_resident_ids.py)."""

from __future__ import annotations

from test_ingest import (  # noqa: F401  (settings and db are fixtures)
    CATALOG,
    ENTERPRISES,
    EVENTS,
    PEOPLE,
    db,
    ingest,
    quarantined,
    settings,
    write_export,
)
from data.settings import load_settings
from yiwang.migrations import open_db


def test_registry_ids_outside_the_api_alphabet_are_refused(settings, db, tmp_path):
    people = PEOPLE + "P😀0001,1990-01-01,M,黄浦区,1,,,,,,,\n" + "P 2,1990-01-01,M,黄浦区,1,,,,,,,\n"
    enterprises = ENTERPRISES + f"{'E' * 65},某公司,H,黄浦区,2020-01-01,3,,P1\n" + "E9,某公司,H,黄浦区,2020-01-01,3,,P/1\n"
    s = ingest(settings, db, write_export(tmp_path, catalog=CATALOG, people=people, enterprises=enterprises))
    got = {(r["table"], r["line"]): (r["field"], r["reason"]) for t in ("people", "enterprises")
           for r in quarantined(db, s.ingest_id, t)}
    assert got == {
        ("people", 5): ("person_id", "bad_id"),
        ("people", 6): ("person_id", "bad_id"),
        ("enterprises", 4): ("enterprise_id", "bad_id"),
        ("enterprises", 5): ("legal_rep_id", "bad_id"),
    }


def test_event_subjects_outside_the_rule_are_refused_when_unregistered_ones_are_kept(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    settings = load_settings(home=tmp_path / "home", id_hash_key="k", data_dir=data, unknown_subject_events="keep")
    db = open_db(settings.db_path)
    try:
        events = EVENTS + "P😀0001,I1,view,2025-06-01 09:00:00,app,\n"
        events += "portal-user-7,I1,view,2025-06-01 09:00:00,app,\n"
        s = ingest(settings, db, write_export(tmp_path, catalog=CATALOG, events=events))
        assert s.tables["events"].inserted == 6
        (r,) = quarantined(db, s.ingest_id, "events")
        assert (r["line"], r["field"], r["reason"]) == (7, "subject_id", "bad_id")
    finally:
        db.conn.close()

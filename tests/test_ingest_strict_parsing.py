"""The contract's shapes, exactly (issue 10 item 13): dates are YYYY-MM-DD, integers carry no `+`, event
times have the documented ISO shape and fall between 1900 and as_of. The parsers underneath are lenient
(`2026-2-3`, `+7`, year 0001); what they accept beyond the contract is quarantined with a named reason."""

from __future__ import annotations

import polars as pl

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
from data.eventlog import scan_events
from data.registry import stored_record


def _reasons(db, s, table):
    return {r["line"]: (r["field"], r["reason"]) for r in quarantined(db, s.ingest_id, table)}


def test_dates_integers_and_timestamps_follow_the_contract_exactly(settings, db, tmp_path):
    people = PEOPLE + "P7,1990-2-3,M,黄浦区,1,,,,,,,\n" + "P8,+1990-02-03,M,黄浦区,1,,,,,,,\n"
    people += "P9,1990-02-03,M,黄浦区,1,,,,,,,\n"
    enterprises = ENTERPRISES + "E7,某公司,H,黄浦区,2020-01-01,+7,,P1\n" + "E8,某公司,H,黄浦区,2020-01-01, 7 ,,P1\n"
    events = EVENTS + "".join(
        f"P1,I2,view,{ts},app,t{n}\n"
        for n, ts in enumerate([
            "2025-6-1 09:00:00",            # 7: unpadded
            "+2025-06-01 09:00:00",         # 8: signed year
            " 2025-06-01 09:00:00",         # 9: a leading space (events are not trimmed)
            "2025-06-01 9:00:00",           # 10
            "0001-01-01 00:00:00",          # 11
            "1000-06-01T00:00:00+08:00",    # 12
            "1899-12-31T23:59:59Z",         # 13
            "2025-06-01T09:00:00.5+08:00",  # 14: fine
            "1900-01-02 00:00:00",          # 15: fine
        ])
    )
    export = write_export(tmp_path, catalog=CATALOG, people=people, enterprises=enterprises, events=events)
    s = ingest(settings, db, export)
    assert _reasons(db, s, "people") == {5: ("birth_date", "bad_date"), 6: ("birth_date", "bad_date")}
    assert _reasons(db, s, "enterprises") == {4: ("employees", "bad_integer")}
    assert stored_record(db.conn, "enterprises", "E8", ["employees"]) == (7,)
    assert _reasons(db, s, "events") == {
        **{n: ("ts", "bad_timestamp") for n in (7, 8, 9, 10)},
        **{n: ("ts", "ts_before_1900") for n in (11, 12, 13)},
    }
    stored = scan_events(settings.events_dir).collect()
    assert sorted(stored.filter(pl.col("event_id").is_in(["t7", "t8"]))["event_id"]) == ["t7", "t8"]
    assert stored["ts"].dt.year().min() >= 1900
    assert sorted(p.name for p in settings.events_dir.glob("month=*"))[0] == "month=1900-01"

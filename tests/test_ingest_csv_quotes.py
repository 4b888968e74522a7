"""A stray `"` in a CSV (issue 10 item 6): the quoted field it opens swallows every line up to the next `"`
(or the end of the file). A record spanning many lines like that is a broken quote, not a record: ingest
reports its line, quarantines the broken lines as ``broken_quote`` and reads the swallowed lines one by one,
so every other row still loads, with its own line number. Legitimate multi-line values still load whole."""

from __future__ import annotations

import re

import polars as pl

from test_ingest import (  # noqa: F401  (settings and db are fixtures)
    AS_OF,
    CATALOG,
    ENTERPRISES,
    PEOPLE,
    check_identity,
    db,
    quarantined,
    settings,
    write_export,
)
from data.eventlog import scan_events
from data.ingest import ingest_export
from data.settings import load_settings
from yiwang.migrations import open_db

EVENTS_HEADER = "subject_id,item_id,action,ts,channel,event_id\n"


def _event(n: int) -> str:
    return f"P1,I2,view,2025-06-01 09:00:00,app,e{n}\n"


def _events_settings(tmp_path):
    return load_settings(home=tmp_path / "home", id_hash_key="k", data_dir=tmp_path, ingest_batch_rows=1000)


def _events_export(tmp_path, lines):
    return write_export(tmp_path, catalog=CATALOG, people=PEOPLE, events=EVENTS_HEADER + "".join(lines))


def _enterprises_export(tmp_path, rows):
    header = ENTERPRISES.splitlines(True)[0]
    return write_export(tmp_path, catalog=CATALOG, people=PEOPLE, enterprises=header + "".join(rows))


def _ingest(settings, db, export):
    s = ingest_export(settings, db, export, as_of=AS_OF)
    check_identity(db, settings, s)
    return s


def test_stray_quote_in_a_registry_quarantines_its_line_and_loads_the_rest(settings, db, tmp_path):
    rows = [f"E{n},上海某某{n}有限公司,I,静安区,2018-05-01,{n},,P1\n" for n in range(1, 501)]
    rows[2] = rows[2].replace("上海某某3", '"上海某某3')  # line 4
    export = _enterprises_export(tmp_path, rows)
    s = _ingest(settings, db, export)
    t = s.tables["enterprises"]
    assert (t.rows_in, t.inserted, t.reasons) == (500, 499, {"broken_quote": 1})
    (r,) = quarantined(db, s.ingest_id, "enterprises")
    assert (r["line"], r["reason"]) == (4, "broken_quote") and "上海某某3" in r["raw"] and "E4," not in r["raw"]


def test_stray_quote_in_the_last_column_swallowing_to_the_end(tmp_path):
    settings = _events_settings(tmp_path)
    db = open_db(settings.db_path)
    lines = [_event(n) for n in range(2, 5002)]  # line n holds event e<n>
    lines[8] = lines[8].replace(",e10", ',"e10')  # line 10: the rest of the file is one quoted field
    lines[3998] = lines[3998].replace("view", "stare")  # line 4000: a bad row after the broken quote
    s = _ingest(settings, db, _events_export(tmp_path, lines))
    t = s.tables["events"]
    assert (t.rows_in, t.inserted, t.reasons) == (5000, 4998, {"broken_quote": 1, "unknown_action": 1})
    got = {(r["line"], r["reason"]) for r in quarantined(db, s.ingest_id, "events")}
    assert got == {(10, "broken_quote"), (4000, "unknown_action")}
    assert scan_events(settings.events_dir).filter(pl.col("event_id") == "e4999").collect().height == 1
    db.conn.close()


def test_stray_quote_closed_by_another_many_lines_later(tmp_path):
    settings = _events_settings(tmp_path)
    db = open_db(settings.db_path)
    lines = [_event(n) for n in range(2, 5002)]
    lines[8] = lines[8].replace("P1,I2", 'P1,"I2')  # line 10 opens a quote ...
    lines[2998] = lines[2998].replace("P1,I2", 'P1,"I2')  # ... line 3000 closes it
    lines[3998] = lines[3998].replace("view", "stare")  # line 4000, in a later batch
    s = _ingest(settings, db, _events_export(tmp_path, lines))
    t = s.tables["events"]
    assert (t.rows_in, t.inserted) == (5000, 4997)
    got = {(r["line"], r["reason"]) for r in quarantined(db, s.ingest_id, "events")}
    assert got == {(10, "broken_quote"), (3000, "broken_quote"), (4000, "unknown_action")}
    db.conn.close()


def test_legitimate_multiline_values_still_load_whole(settings, db, tmp_path):
    people = PEOPLE.replace(",ann\n", ',"ann\nwho moved, twice\nlast year"\n')
    people += "P4,1980-01-01,F,黄浦区,maybe,,,,,,,\n"
    s = _ingest(settings, db, write_export(tmp_path, catalog=CATALOG, people=people))
    t = s.tables["people"]
    assert (t.rows_in, t.inserted, t.reasons) == (4, 3, {"bad_bool": 1})
    (r,) = quarantined(db, s.ingest_id, "people")
    assert r["line"] == 5  # the record number, as the contract says


def test_stray_quote_swallowing_more_than_a_parser_block_refuses_the_file_by_record(tmp_path, monkeypatch):
    import data.ingest

    monkeypatch.setattr(data.ingest, "CSV_BLOCK_BYTES", 1 << 16)  # the real 32 MB, scaled down
    settings = _events_settings(tmp_path)
    db = open_db(settings.db_path)
    lines = [_event(n) for n in range(2, 5002)]
    lines[2500] = lines[2500].replace(",e2502", ',"e2502')
    s = _ingest(settings, db, _events_export(tmp_path, lines))
    message = s.tables["events"].rejected
    assert "events.csv" in message and "stray" in message and "straddl" not in message
    near = int(re.search(r"at or after record (\d+)", message).group(1))
    assert 1 < near <= 2502  # the record opening the quote is at or after the one named
    assert scan_events(settings.events_dir).collect().height == 0
    db.conn.close()


def test_stray_quote_swallowing_more_than_a_block_of_a_registry_still_loads_the_rest(
    settings, db, tmp_path, monkeypatch
):
    import data.ingest

    monkeypatch.setattr(data.ingest, "CSV_BLOCK_BYTES", 1 << 16)  # the real 32 MB, scaled down
    rows = [f"E{n},上海某某{n}有限公司,I,静安区,2018-05-01,{n},,P1\n" for n in range(1, 3001)]
    rows[99] = rows[99].replace("上海某某100", '"上海某某100')  # line 101; the file is ~200 KB
    export = _enterprises_export(tmp_path, rows)
    s = _ingest(settings, db, export)
    t = s.tables["enterprises"]
    assert (t.rejected, t.rows_in, t.inserted, t.reasons) == (None, 3000, 2999, {"broken_quote": 1})
    (r,) = quarantined(db, s.ingest_id, "enterprises")
    assert r["line"] == 101

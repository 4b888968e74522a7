"""Ingest of hand-made exports: every bad-input case keeps rows in = stored + quarantined and names the
file, field and line; re-ingest is idempotent; the clear resident ID never reaches the store."""

from __future__ import annotations

import hmac
import json
import os
import subprocess
import sys
import textwrap
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from data.contract import resident_id_check_char, uscc_check_char
from data.eventlog import scan_events
from data.ingest import ingest_export, read_quarantine
from data.registry import count_records, ingest_record, scan_table, stored_record
from data.settings import load_settings
from yiwang.migrations import open_db

AS_OF = date(2025, 6, 30)
REPO = Path(__file__).resolve().parent.parent


def rid(body17: str) -> str:
    return body17 + resident_id_check_char(body17)


def uscc(body17: str) -> str:
    return body17 + uscc_check_char(body17)


ID1, ID2, ID3 = rid("31010119800101001"), rid("31011519900202002"), rid("31010420150303003")
USCC1, USCC2 = uscc("91310106MA1FL0001"), uscc("91310115MA1FL0002")

CATALOG = """\
item_id,name,department,audience,category,life_events,once_per_subject,min_age,max_age,renews_license
I1,结婚登记,市民政局,person,婚育,marriage,1,18,,
I2,往来港澳通行证换发,市出入境管理局,person,出入境,,0,,,hk_macau_permit
I3,营业执照,市市场监管局,enterprise,开办,,,,,
"""
PEOPLE = f"""\
person_id,birth_date,gender,district,local_hukou,id_number,marital_status,household_id,occupation,low_income,disability,nickname
P1,1980-01-01,F,黄浦区,1,{ID1},married,H1,teacher,0,0,ann
P2,1990-02-02,M,浦东新区,0,{ID2},single,H2,,,,bob
P3,2015-03-03,F,徐汇区,true,{ID3},,H1,,,,
"""
ENTERPRISES = f"""\
enterprise_id,name,industry,district,founded_on,employees,uscc,legal_rep_id
E1,上海某某软件有限公司,I,静安区,2018-05-01,42,{USCC1},P1
E2,上海某某餐饮有限公司,H,浦东新区,2024-11-11,5,{USCC2},P2
"""
LICENSES = """\
license_id,holder_id,license_type,issued_on,expires_on
L1,P1,hk_macau_permit,2016-07-01,2026-06-30
L2,E1,business_licence,2018-05-01,
"""
EVENTS = """\
subject_id,item_id,action,ts,channel,event_id
P1,I2,view,2025-06-01 09:00:00,app,
P1,I2,apply,2025-06-01T09:05:00+08:00,window,
P2,I1,view,2025-05-01T01:00:00Z,web,
E1,I3,click,2024-12-31 23:30:00,web,
P3,I1,view,2025-01-15 10:00:00,,given-1
"""
LICENSE_TYPES = """\
license_type,name_zh,name_en,holder,validity_years,renewal_item_id
hk_macau_permit,往来港澳通行证,HK/Macau permit,person,10,I2
business_licence,营业执照,Business licence,enterprise,,
passport,护照,Passport,person,10,
"""


def write_export(root: Path, **tables: str | bytes) -> Path:
    """An export directory with one CSV per keyword (catalog=..., people=...); None omits the table."""
    export = root / "export"
    export.mkdir(parents=True, exist_ok=True)
    for name, text in tables.items():
        if text is None:
            continue
        data = text if isinstance(text, bytes) else textwrap.dedent(text).encode("utf-8")
        (export / f"{name}.csv").write_bytes(data)
    return export


def base_tables(**override) -> dict:
    tables = dict(catalog=CATALOG, people=PEOPLE, enterprises=ENTERPRISES, licenses=LICENSES, events=EVENTS)
    tables.update(override)
    return tables


@pytest.fixture
def settings(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "license_types.csv").write_text(LICENSE_TYPES, encoding="utf-8")
    return load_settings(home=tmp_path / "home", id_hash_key="test-key", data_dir=data)


@pytest.fixture
def db(settings):
    d = open_db(settings.db_path)
    yield d
    d.conn.close()


def count(db, table: str) -> int:
    return count_records(db.conn, table)


def check_identity(db, settings, summary) -> None:
    """rows in = stored + quarantined per table, and the store agrees with the summary."""
    for name, t in summary.tables.items():
        assert t.rows_in == t.inserted + t.updated + t.unchanged + t.quarantined, name
        assert sum(t.reasons.values()) == t.quarantined, name
        in_q = sum(c["rows"] for c in read_quarantine(db, summary.ingest_id, name)["counts"])
        assert in_q == t.quarantined, name
    stored = ingest_record(db.conn, summary.ingest_id)["summary"]
    assert stored == json.loads(json.dumps(summary.to_dict(), ensure_ascii=False))


def quarantined(db, ingest_id: int, table: str) -> list[dict]:
    return read_quarantine(db, ingest_id, table, limit=1000)["rows"]


def ingest(settings, db, export, as_of=AS_OF):
    summary = ingest_export(settings, db, export, as_of=as_of)
    check_identity(db, settings, summary)
    return summary


# --- the clean path -------------------------------------------------------------------------------


def test_clean_export_loads_everything(settings, db, tmp_path):
    s = ingest(settings, db, write_export(tmp_path, **base_tables()))
    assert s.status == "done" and s.rejected_files == []
    assert {t: (v.rows_in, v.inserted, v.quarantined) for t, v in s.tables.items()} == {
        "catalog": (3, 3, 0),
        "people": (3, 3, 0),
        "enterprises": (2, 2, 0),
        "licenses": (2, 2, 0),
        "events": (5, 5, 0),
    }
    p1 = stored_record(db.conn, "people", "P1", ["birth_date", "local_hukou", "id_hash", "occupation", "low_income"])
    assert p1 == ("1980-01-01", 1, hmac.new(b"test-key", ID1.encode(), "sha256").hexdigest(), "teacher", 0)
    assert stored_record(db.conn, "people", "P3", ["local_hukou", "low_income"]) == (1, None)
    assert stored_record(db.conn, "licenses", "L2", ["expires_on"]) == (None,)
    assert stored_record(db.conn, "catalog", "I3", ["once_per_subject", "local_hukou_only", "min_age"]) == (0, 0, None)

    people = scan_table(settings.home, "people").collect()
    assert people.height == 3 and people.schema["birth_date"] == pl.Date
    events = scan_events(settings.events_dir).sort("ts").collect()
    assert events.height == 5
    # Naive local time is Asia/Shanghai: 23:30 on 31 Dec local is 15:30 UTC.
    e1 = events.filter(pl.col("subject_id") == "E1").row(0, named=True)
    assert e1["ts"].isoformat() == "2024-12-31T15:30:00+00:00" and e1["event_id"].startswith("d:|E1|I3|click|")
    assert events.filter(pl.col("subject_id") == "P3")["event_id"].to_list() == ["given-1"]
    assert events.filter(pl.col("subject_id") == "P3")["channel"].to_list() == [None]


def test_clear_resident_id_never_stored(settings, db, tmp_path):
    bad = PEOPLE + f"P9,1980-01-01,F,黄浦区,1,{ID1[:-1]}{'0' if ID1[-1] != '0' else '1'},,,,,,\n"
    s = ingest(settings, db, write_export(tmp_path, **base_tables(people=bad)))
    assert s.tables["people"].reasons == {"bad_checksum": 1}
    db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for path in settings.home.rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            for number in (ID1, ID2, ID3, ID1[6:14] + ID1[14:17]):
                assert number.encode() not in blob, path


def test_reingest_is_idempotent_and_counts_updates(settings, db, tmp_path):
    export = write_export(tmp_path, **base_tables())
    first = ingest(settings, db, export)
    second = ingest(settings, db, export)
    for name, t in second.tables.items():
        assert (t.inserted, t.updated, t.unchanged) == (0, 0, first.tables[name].inserted), name
    assert count(db, "people") == 3 and scan_events(settings.events_dir).collect().height == 5

    changed = PEOPLE.replace("P2,1990-02-02,M,浦东新区,0", "P2,1990-02-02,M,闵行区,0") + "P4,2000-01-01,M,崇明区,0,,,,,,,\n"
    (export / "people.csv").write_text(changed, encoding="utf-8")
    third = ingest(settings, db, export)
    t = third.tables["people"]
    assert (t.inserted, t.updated, t.unchanged) == (1, 1, 2)
    assert stored_record(db.conn, "people", "P2", ["district", "ingest_id"]) == ("闵行区", third.ingest_id)
    assert stored_record(db.conn, "people", "P1", ["ingest_id"]) == (first.ingest_id,)
    assert scan_table(settings.home, "people").collect().height == 4


# --- bad input, file level --------------------------------------------------------------------------


def test_missing_required_column_rejects_that_file_only(settings, db, tmp_path):
    no_birth = "person_id,gender,district,local_hukou\nP1,F,黄浦区,1\n"
    s = ingest(settings, db, write_export(tmp_path, **base_tables(people=no_birth, licenses=None)))
    p = s.tables["people"]
    assert p.rejected and "people.csv" in p.rejected and "birth_date" in p.rejected
    assert (p.rows_in, p.quarantined) == (0, 0) and count(db, "people") == 0
    assert s.tables["enterprises"].inserted == 2
    # With no people registered, their events are quarantined as unknown subjects; E1's is kept.
    assert s.tables["events"].reasons == {"unknown_subject": 4} and s.tables["events"].inserted == 1
    assert read_quarantine(db, s.ingest_id, "people")["rejected_files"][0]["message"] == p.rejected


def test_empty_file_is_rejected_header_only_is_fine(settings, db, tmp_path):
    header_only = "license_id,holder_id,license_type,issued_on,expires_on\n"
    s = ingest(settings, db, write_export(tmp_path, **base_tables(enterprises=b"", licenses=header_only)))
    assert "enterprises.csv" in s.tables["enterprises"].rejected and "empty file" in s.tables["enterprises"].rejected
    assert s.tables["licenses"].rejected is None and s.tables["licenses"].rows_in == 0
    assert s.tables["people"].inserted == 3


def test_unreadable_file_is_named_and_others_still_load(settings, db, tmp_path):
    export = write_export(tmp_path, **base_tables(enterprises=None))
    (export / "enterprises.csv").mkdir()  # a directory where a file should be: unreadable as a file
    s = ingest(settings, db, export)
    assert "enterprises.csv" in s.tables["enterprises"].rejected
    assert s.tables["people"].inserted == 3 and s.tables["catalog"].inserted == 3


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads files whatever their mode")
def test_permission_denied_is_named(settings, db, tmp_path):
    export = write_export(tmp_path, **base_tables())
    (export / "people.csv").chmod(0)
    s = ingest(settings, db, export)
    assert "people.csv" in s.tables["people"].rejected and "permission denied" in s.tables["people"].rejected


def test_gbk_csv_is_decoded_and_said_so(settings, db, tmp_path):
    export = write_export(tmp_path, **base_tables(catalog=CATALOG.encode("gbk")))
    s = ingest(settings, db, export)
    assert s.tables["catalog"].encoding == "gb18030" and "GBK" in s.tables["catalog"].note
    assert stored_record(db.conn, "catalog", "I1", ["name"]) == ("结婚登记",)


def test_undecodable_file_is_rejected_naming_the_encoding(settings, db, tmp_path):
    # 0x80 alone and 0xFF are invalid both in UTF-8 and in GB18030.
    broken = b"item_id,name,department,audience,category\nI1,\x80\xff,x,person,c\n"
    s = ingest(settings, db, write_export(tmp_path, **base_tables(catalog=broken)))
    msg = s.tables["catalog"].rejected
    assert "catalog.csv" in msg and "line 2" in msg and "UTF-8" in msg and "GB18030" in msg


def test_no_table_files_is_a_contract_error(settings, db, tmp_path):
    from data.errors import ContractError

    (tmp_path / "empty").mkdir()
    with pytest.raises(ContractError, match="no table files"):
        ingest_export(settings, db, tmp_path / "empty", as_of=AS_OF)
    with pytest.raises(ContractError, match="no such export directory"):
        ingest_export(settings, db, tmp_path / "absent", as_of=AS_OF)


# --- bad input, row level --------------------------------------------------------------------------


def test_wrong_types(settings, db, tmp_path):
    ent = ENTERPRISES + "E3,某公司,I,静安区,2020-01-01,many,,\nE4,某公司,I,静安区,2020-01-01,-3,,\nE5,某公司,Z,静安区,2020-01-01,3,,\n"
    ppl = PEOPLE + "P4,1980-01-01,F,黄浦区,maybe,,,,,,,\n"
    s = ingest(settings, db, write_export(tmp_path, **base_tables(enterprises=ent, people=ppl)))
    rows = {(r["line"], r["field"], r["reason"]) for r in quarantined(db, s.ingest_id, "enterprises")}
    assert rows == {(4, "employees", "bad_integer"), (5, "employees", "out_of_range"), (6, "industry", "bad_value")}
    assert [(r["line"], r["field"], r["reason"]) for r in quarantined(db, s.ingest_id, "people")] == [(5, "local_hukou", "bad_bool")]
    assert all(r["source_file"].endswith("enterprises.csv") for r in quarantined(db, s.ingest_id, "enterprises"))
    assert count(db, "enterprises") == 2


def test_unparseable_and_future_dates(settings, db, tmp_path):
    ppl = PEOPLE + "P4,1980/01/01,F,黄浦区,1,,,,,,,\nP5,2026-01-01,F,黄浦区,1,,,,,,,\nP6,,F,黄浦区,1,,,,,,,\n"
    s = ingest(settings, db, write_export(tmp_path, **base_tables(people=ppl)))
    got = [(r["line"], r["field"], r["reason"]) for r in quarantined(db, s.ingest_id, "people")]
    assert got == [(5, "birth_date", "bad_date"), (6, "birth_date", "future_birth_date"), (7, "birth_date", "missing_value")]
    assert json.loads(quarantined(db, s.ingest_id, "people")[0]["raw"])["birth_date"] == "1980/01/01"


def test_expires_before_issued_and_unknown_holder_or_type(settings, db, tmp_path):
    lic = LICENSES + "L3,P1,passport,2020-01-01,2019-12-31\nL4,P404,passport,2020-01-01,\nL5,P1,moon_visa,2020-01-01,\n"
    s = ingest(settings, db, write_export(tmp_path, **base_tables(licenses=lic)))
    got = [(r["line"], r["field"], r["reason"]) for r in quarantined(db, s.ingest_id, "licenses")]
    assert got == [
        (4, "expires_on", "expires_before_issued"),
        (5, "holder_id", "unknown_subject"),
        (6, "license_type", "unknown_license_type"),
    ]


def test_bad_checksums(settings, db, tmp_path):
    bad_id = ID2[:-1] + ("0" if ID2[-1] != "0" else "1")
    bad_uscc = USCC2[:-1] + ("0" if USCC2[-1] != "0" else "1")
    ppl = PEOPLE.replace(ID2, bad_id)
    ent = ENTERPRISES.replace(USCC2, bad_uscc)
    s = ingest(settings, db, write_export(tmp_path, **base_tables(people=ppl, enterprises=ent)))
    (p,) = quarantined(db, s.ingest_id, "people")
    assert (p["line"], p["field"], p["reason"]) == (3, "id_number", "bad_checksum")
    assert json.loads(p["raw"])["id_number"] == bad_id[:6] + "*" * 12
    (e,) = quarantined(db, s.ingest_id, "enterprises")
    assert (e["line"], e["field"], e["reason"]) == (3, "uscc", "bad_checksum")
    # P2's events now name an unknown subject.
    assert s.tables["events"].reasons == {"unknown_subject": 1}


def test_duplicate_primary_keys_first_kept(settings, db, tmp_path):
    ppl = PEOPLE + "P1,1999-09-09,M,黄浦区,0,,,,,,,\n"
    ev = EVENTS + "P2,I1,click,2025-02-01 10:00:00,web,given-1\nP1,I2,view,2025-06-01 09:00:00,app,\n"
    s = ingest(settings, db, write_export(tmp_path, **base_tables(people=ppl, events=ev)))
    assert [(r["line"], r["field"], r["reason"]) for r in quarantined(db, s.ingest_id, "people")] == [(5, "person_id", "duplicate_key")]
    assert stored_record(db.conn, "people", "P1", ["birth_date"]) == ("1980-01-01",)
    got = sorted((r["line"], r["field"], r["reason"]) for r in quarantined(db, s.ingest_id, "events"))
    # given-1 reappears in another month; the second line repeats line 2 (same derived id).
    assert got == [(7, "event_id", "duplicate_key"), (8, "event_id", "duplicate_key")]
    assert scan_events(settings.events_dir).filter(pl.col("event_id") == "given-1").collect()["subject_id"].to_list() == ["P3"]
    # Again: the same rows are quarantined as duplicates, the kept ones are already stored (unchanged).
    again = ingest(settings, db, write_export(tmp_path, **base_tables(people=ppl, events=ev)))
    e = again.tables["events"]
    assert (e.inserted, e.unchanged, e.reasons) == (0, 5, {"duplicate_key": 2})
    assert sorted((r["line"], r["reason"]) for r in quarantined(db, again.ingest_id, "events")) == [
        (7, "duplicate_key"), (8, "duplicate_key")
    ]
    assert scan_events(settings.events_dir).collect().height == 5


def test_events_unknown_items_subjects_actions_channels(settings, db, tmp_path):
    ev = EVENTS + (
        "P1,I404,view,2025-06-01 09:00:00,app,\n"
        "P404,I1,view,2025-06-01 09:00:00,app,\n"
        "P1,I1,teleport,2025-06-01 09:00:00,app,\n"
        "P1,I1,view,2025-06-01 09:00:00,pigeon,\n"
        "P1,I1,view,2025-07-01 00:00:01,app,\n"
        "P1,I1,view,01/06/2025 09:00,app,\n"
    )
    s = ingest(settings, db, write_export(tmp_path, **base_tables(events=ev)))
    got = [(r["line"], r["field"], r["reason"]) for r in quarantined(db, s.ingest_id, "events")]
    assert got == [
        (7, "item_id", "unknown_item"),
        (8, "subject_id", "unknown_subject"),
        (9, "action", "unknown_action"),
        (10, "channel", "unknown_channel"),
        (11, "ts", "ts_after_as_of"),
        (12, "ts", "bad_timestamp"),
    ]
    assert s.tables["events"].inserted == 5


def test_unknown_subject_events_can_be_kept(tmp_path):
    settings = load_settings(home=tmp_path / "home", id_hash_key="k", data_dir=tmp_path, unknown_subject_events="keep")
    db = open_db(settings.db_path)
    ev = EVENTS + "U77,I1,view,2025-06-01 09:00:00,app,\nU77,I404,view,2025-06-01 09:00:00,app,\n"
    s = ingest(settings, db, write_export(tmp_path, **base_tables(events=ev)))
    assert s.tables["events"].inserted == 6 and s.tables["events"].reasons == {"unknown_item": 1}
    db.conn.close()


def test_nul_bytes_are_quarantined(settings, db, tmp_path):
    ppl = PEOPLE.encode() + "P4,1980-01-01,F,黄浦区,1,,sin\x00gle,,,,,\n".encode()
    s = ingest(settings, db, write_export(tmp_path, **base_tables(people=ppl)))
    (r,) = quarantined(db, s.ingest_id, "people")
    assert (r["line"], r["field"], r["reason"]) == (5, "marital_status", "nul_byte")
    assert count(db, "people") == 3


def test_malformed_rows_keep_line_numbers_exact(settings, db, tmp_path):
    ppl = PEOPLE + "P4,1980-01-01,F\nP5,1980-01-01,F,黄浦区,1,,,,,,,,extra-field\nP6,1980-13-01,F,黄浦区,1,,,,,,,\n"
    s = ingest(settings, db, write_export(tmp_path, **base_tables(people=ppl)))
    got = [(r["line"], r["reason"]) for r in quarantined(db, s.ingest_id, "people")]
    assert sorted(got) == [(5, "malformed_row"), (6, "malformed_row"), (7, "bad_date")]


def test_events_streamed_in_small_batches(tmp_path):
    settings = load_settings(home=tmp_path / "home", id_hash_key="k", data_dir=tmp_path, ingest_batch_rows=3)
    db = open_db(settings.db_path)
    n = 50
    lines = [f"P{1 + i % 3},I{1 + i % 2},view,2025-0{1 + i % 5}-1{i % 10} 0{i % 10}:00:{i % 60:02d},app,\n" for i in range(n)]
    lines[40] = lines[3]  # a duplicate across batches
    lines[20] = "P1,I1,view,nonsense,app,\n"
    ev = EVENTS.splitlines(keepends=True)[0] + "".join(lines)
    s = ingest(settings, db, write_export(tmp_path, **base_tables(events=ev)))
    got = sorted((r["line"], r["reason"]) for r in quarantined(db, s.ingest_id, "events"))
    assert got == [(22, "bad_timestamp"), (42, "duplicate_key")]
    assert scan_events(settings.events_dir).collect().height == n - 2 == s.tables["events"].inserted
    db.conn.close()


def test_parquet_tables(settings, db, tmp_path):
    export = write_export(tmp_path, **base_tables(people=None, events=None))
    pl.read_csv(PEOPLE.encode(), infer_schema=False).with_columns(
        pl.col("birth_date").str.to_date(), (pl.col("local_hukou") == "1").alias("local_hukou")
    ).write_parquet(export / "people.parquet")
    pl.DataFrame(
        {
            "subject_id": ["P1", "P2", "P404"],
            "item_id": ["I1", "I2", "I1"],
            "action": ["view", "click", "view"],
            "ts": pl.Series(["2025-06-01 09:00:00"] * 3).str.to_datetime(),
        }
    ).write_parquet(export / "events.parquet")
    s = ingest(settings, db, export)
    assert s.tables["people"].format == "parquet" and s.tables["people"].inserted == 3
    # Typed Parquet values go through the same rules: a real Date and a real Boolean.
    assert stored_record(db.conn, "people", "P1", ["birth_date", "local_hukou"]) == ("1980-01-01", 1)
    assert s.tables["events"].inserted == 2
    (r,) = quarantined(db, s.ingest_id, "events")
    assert (r["line"], r["reason"]) == (3, "unknown_subject")
    ts = scan_events(settings.events_dir).collect()["ts"].to_list()
    assert {t.isoformat() for t in ts} == {"2025-06-01T01:00:00+00:00"}


def test_catalog_falls_back_to_data_dir(settings, db, tmp_path):
    (settings.data_dir / "catalog.csv").write_text(CATALOG, encoding="utf-8")
    s = ingest(settings, db, write_export(tmp_path, **base_tables(catalog=None)))
    assert s.tables["catalog"].source.endswith("data/catalog.csv") and s.tables["catalog"].inserted == 3
    assert s.tables["events"].quarantined == 0


def test_cli_ingest_and_quarantine(settings, tmp_path):
    export = write_export(tmp_path, **base_tables(enterprises=b"", people=PEOPLE + "P4,1980-01-01,F,黄浦区,maybe,,,,,,,\n"))
    # Wide COLUMNS: rich would otherwise wrap long paths in the messages.
    env = {**os.environ, "COLUMNS": "400", "YIWANG_HOME": str(settings.home), "YIWANG_ID_HASH_KEY": "k", "YIWANG_DATA_DIR": str(settings.data_dir)}
    yiwang = [sys.executable, "-c", "from yiwang.cli import main; main()"]
    out = subprocess.run([*yiwang, "ingest", str(export), "--as-of", "2025-06-30", "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and "enterprises.csv" in out.stderr and "empty file" in out.stderr
    summary = json.loads(out.stdout)
    assert summary["tables"]["people"]["reasons"] == {"bad_bool": 1}
    out = subprocess.run([*yiwang, "quarantine", "--json", "--table", "people"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert [(r["line"], r["field"], r["reason"]) for r in data["rows"]] == [(5, "local_hukou", "bad_bool")]
    out = subprocess.run([*yiwang, "ingest", str(tmp_path / "nope")], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "no such export directory" in out.stderr and "Traceback" not in out.stderr


def test_events_breaking_late_store_nothing(tmp_path):
    """Bad bytes after the 4 MB encoding sample: the events file is refused whole, nothing of it stored."""
    settings = load_settings(home=tmp_path / "home", id_hash_key="k", data_dir=tmp_path, ingest_batch_rows=20_000)
    db = open_db(settings.db_path)
    row = "P1,I1,view,2025-06-01 09:00:00,app,\n"
    n = (5 << 20) // len(row)
    body = (EVENTS.splitlines(keepends=True)[0] + row * n).encode() + b"P1,I1,view,2025-06-01 09:00:00,\xff\xfe,\n"
    s = ingest(settings, db, write_export(tmp_path, **base_tables(events=body)))
    assert "events.csv" in s.tables["events"].rejected and "UTF-8" in s.tables["events"].rejected
    assert scan_events(settings.events_dir).collect().height == 0
    # Its rows were duplicates of one another (quarantined while streaming): that was rolled back too.
    assert read_quarantine(db, s.ingest_id)["counts"] == []
    assert list((settings.home / "tmp").glob("ingest-*")) == []
    assert list(settings.events_dir.rglob("*.pending")) == []
    assert s.tables["people"].inserted == 3
    db.conn.close()


def test_not_a_parquet_file_is_refused(settings, db, tmp_path):
    export = write_export(tmp_path, **base_tables(people=None))
    (export / "people.parquet").write_bytes(b"PAR1 but not really")
    s = ingest(settings, db, export)
    assert "people.parquet" in s.tables["people"].rejected and "Parquet" in s.tables["people"].rejected


def test_pending_files_of_a_crashed_ingest_are_ignored_then_removed(settings, db, tmp_path):
    """Event files are written under .pending names and renamed once the whole file validated: leftovers
    of an ingest that died are invisible to readers and deleted by the next ingest."""
    stale = settings.events_dir / "month=2025-06" / "part-000099-00000n-deadbeef.parquet.pending"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half-written")
    assert scan_events(settings.events_dir).collect().height == 0
    s = ingest(settings, db, write_export(tmp_path, **base_tables()))
    assert s.tables["events"].inserted == 5 and not stale.exists()
    assert list(settings.events_dir.rglob("*.pending")) == []
    assert scan_events(settings.events_dir).collect().height == 5

"""Resident ID numbers outside ``people.id_number`` (issue 10 item 5): wherever an ID-shaped value comes in
(an id field, a USCC, a count, free text, an extra column, a malformed or truncated row), no byte under the
store's home holds it in clear afterwards: not SQLite (file, WAL), not any Parquet file, not the quarantine.
Ids that look like resident IDs are refused with ``resident_id_shaped``; free text is masked in place."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from test_ingest import (  # noqa: F401  (settings and db are fixtures)
    CATALOG,
    ENTERPRISES,
    EVENTS,
    LICENSES,
    PEOPLE,
    db,
    ingest,
    quarantined,
    rid,
    settings,
    uscc,
    write_export,
)
from data.registry import stored_record

# One number per place it can hide, so a leak names its way in. Checksums valid, except where noted.
IN_HOLDER = rid("11010119850505011")
IN_SUBJECT = rid("12010119900101022")
IN_EVENT_ID = "130101199102020330"  # wrong check character: still a resident ID's shape
IN_USCC = rid("14010119920303044")
IN_LEGAL_REP = rid("15010119930404055")
IN_EXTRA = rid("21010119940505066")
IN_MALFORMED = rid("22010119950606077")
IN_TRUNCATED = rid("23010119960707088")
IN_NAME = rid("31011219970808099")
IN_EMPLOYEES = "320101199809091015"  # parses as a whole number
IN_HOUSEHOLD = rid("33010119991010112")
IN_PERSON_ID = rid("34010120000111123")
IN_ITEM_NAME = rid("35010120010212134")
ALL = [IN_HOLDER, IN_SUBJECT, IN_EVENT_ID, IN_USCC, IN_LEGAL_REP, IN_EXTRA, IN_MALFORMED, IN_TRUNCATED, IN_NAME,
       IN_EMPLOYEES, IN_HOUSEHOLD, IN_PERSON_ID, IN_ITEM_NAME]


def clear_digits(number: str) -> str:
    """What must never appear: the birth date, sequence and check character (masking keeps the address code)."""
    return number[6:]


def leaks(home: Path, numbers: list[str]) -> dict[str, list[str]]:
    """Where under ``home`` each number appears in clear: raw bytes of every file (SQLite file, WAL, key,
    Parquet), and every Parquet file decoded (its pages may be compressed) and every SQLite table dumped."""
    found: dict[str, list[str]] = {}
    texts: list[tuple[str, bytes]] = []
    for path in sorted(p for p in home.rglob("*") if p.is_file()):
        texts.append((str(path.relative_to(home)), path.read_bytes()))
        if ".parquet" in path.name:
            frame = pl.read_parquet(path)
            dump = frame.select(pl.all().cast(pl.String)).write_csv()
            texts.append((f"{path.relative_to(home)} (decoded)", dump.encode()))
    import sqlite3

    conn = sqlite3.connect(home / "yiwang.db")
    try:
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            rows = conn.execute(f'SELECT * FROM "{table}"').fetchall()
            texts.append((f"sqlite table {table}", repr(rows).encode()))
    finally:
        conn.close()
    for number in numbers:
        needle = clear_digits(number).encode()
        where = [name for name, data in texts if needle in data or needle.lower() in data]
        if where:
            found[number] = where
    return found


def _export(tmp_path: Path) -> Path:
    catalog = CATALOG + f"I9,证明开具（{IN_ITEM_NAME}）,市民政局,person,证明,,,,,\n"
    head, *rows = PEOPLE.splitlines()
    people = "\n".join([head + ",spouse_id_number", *(r + "," for r in rows)]) + "\n"
    people += f"P4,1999-10-10,M,黄浦区,1,,single,{IN_HOUSEHOLD},,,,,{IN_EXTRA}\n"  # line 5
    people += f"{IN_PERSON_ID},2000-01-11,F,黄浦区,1,,single,H9,,,,,\n"  # line 6
    people += f"P5,1995-06-06,F,黄浦区,1,,single,H5,,,,,,{IN_MALFORMED},too-many\n"  # line 7
    enterprises = ENTERPRISES
    enterprises += f"E3,个体户{IN_NAME}经营部,H,黄浦区,2020-01-01,3,,P2\n"  # line 4: stored, masked
    enterprises += f"E4,上海某某贸易有限公司,F,黄浦区,2020-01-01,3,{IN_USCC},P2\n"
    enterprises += f"E5,上海某某咨询有限公司,L,黄浦区,2020-01-01,3,,{IN_LEGAL_REP}\n"
    enterprises += f"E6,上海某某科技有限公司,I,黄浦区,2020-01-01,{IN_EMPLOYEES},,P1\n"
    licenses = LICENSES + f"L3,{IN_HOLDER},hk_macau_permit,2016-07-01,2026-06-30\n"
    events = EVENTS
    events += f"{IN_SUBJECT},I2,view,2025-06-01 09:00:00,app,\n"  # line 7
    events += f"P1,I2,view,2025-06-02 09:00:00,app,{IN_EVENT_ID}\n"
    events += f"{IN_TRUNCATED},I2,vi"  # line 9: the file cut off mid-row
    return write_export(
        tmp_path, catalog=catalog, people=people, enterprises=enterprises, licenses=licenses, events=events
    )


def test_no_resident_id_in_clear_anywhere_under_home(settings, db, tmp_path):
    s = ingest(settings, db, _export(tmp_path))
    db.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    assert leaks(settings.home, ALL) == {}
    # The good rows still load; the id-bearing ones are refused with a reason that says why.
    assert s.tables["people"].inserted == 3  # P1, P2 and P3
    by_line = {(r["table"], r["line"]): r for t in s.tables for r in quarantined(db, s.ingest_id, t)}
    assert by_line[("people", 6)]["reason"] == "resident_id_shaped"
    assert by_line[("people", 6)]["field"] == "person_id"
    assert by_line[("people", 5)]["field"] == "household_id"
    assert by_line[("people", 7)]["reason"] == "malformed_row"
    assert {by_line[("enterprises", n)]["field"] for n in (5, 6, 7)} == {"uscc", "legal_rep_id", "employees"}
    assert by_line[("licenses", 4)]["field"] == "holder_id"
    assert by_line[("events", 7)]["field"] == "subject_id"
    assert by_line[("events", 8)]["field"] == "event_id"
    assert {by_line[("events", n)]["reason"] for n in (7, 8)} == {"resident_id_shaped"}
    assert by_line[("events", 9)]["reason"] == "malformed_row"
    # Free text is kept, with the number masked to its address code.
    (name,) = stored_record(db.conn, "enterprises", "E3", ["name"])
    assert name == f"个体户{IN_NAME[:6]}{'*' * 12}经营部"
    (item,) = stored_record(db.conn, "catalog", "I9", ["name"])
    assert IN_ITEM_NAME[:6] + "*" * 12 in item
    # Extra columns and malformed text are kept in the quarantine's raw row, masked.
    assert IN_EXTRA[:6] + "*" * 12 in by_line[("people", 5)]["raw"]
    assert IN_MALFORMED[:6] + "*" * 12 in by_line[("people", 7)]["raw"]


def test_masking_leaves_ordinary_numbers_alone(settings, db, tmp_path):
    """Not every long number is an ID: no birth-date digits, a longer digit run, or a real USCC stay as they are."""
    usccs = [uscc("91310000607216596"), uscc("91310115MA1FL0003")]
    enterprises = ENTERPRISES + "".join(
        f"E{n},上海某某公司{text},H,黄浦区,2020-01-01,3,{code},P2\n"
        for n, text, code in ((7, f"（卡号6{IN_HOLDER}）", usccs[0]), (8, "（订单310101000000000000）", usccs[1]))
    )
    s = ingest(settings, db, write_export(tmp_path, catalog=CATALOG, people=PEOPLE, enterprises=enterprises))
    assert s.tables["enterprises"].inserted == 4, quarantined(db, s.ingest_id, "enterprises")
    rows = {e: " ".join(stored_record(db.conn, "enterprises", e, ["name", "uscc"])) for e in ("E7", "E8")}
    assert rows == {"E7": f"上海某某公司（卡号6{IN_HOLDER}） {usccs[0]}",
                    "E8": f"上海某某公司（订单310101000000000000） {usccs[1]}"}


@pytest.mark.parametrize("text", [f"a{IN_NAME}b{IN_HOLDER},{IN_SUBJECT}x{IN_EXTRA}", f"{IN_NAME}\n{IN_HOLDER}"])
def test_every_id_in_a_text_is_masked_even_side_by_side(text):
    from data.contract import mask_resident_ids

    masked = pl.select(mask_resident_ids(pl.lit(text))).item()
    for number in (IN_NAME, IN_HOLDER, IN_SUBJECT, IN_EXTRA):
        if number in text:
            assert clear_digits(number) not in masked and number[:6] + "*" * 12 in masked

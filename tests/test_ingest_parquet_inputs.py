"""Parquet exports as pandas and damaged disks make them (issue 10 item 11): a corrupt data page refuses
that file by name (exit 2, no library internals, the other files still load); extra columns of any type
are ignored; whole numbers stored as float64 (pandas' integers-with-nulls) are whole numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

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
from data.registry import stored_records

LIBRARY_WORDS = ("thrift", "deserializ", "straddl", "ZSTD", "decompression", "page header", "OSError", "Arrow")


def _corrupt_first_page(path):
    """Flip bytes of the first page header (just after the leading magic); the footer stays intact."""
    data = bytearray(path.read_bytes())
    for i in range(4, 20):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupt_data_page_refuses_that_file_by_name_and_exits_2(settings, tmp_path):
    export = write_export(tmp_path, catalog=CATALOG, people=PEOPLE, enterprises=ENTERPRISES)
    pl.read_csv(EVENTS.encode(), infer_schema=False).write_parquet(export / "events.parquet")
    _corrupt_first_page(export / "events.parquet")
    env = {**os.environ, "COLUMNS": "400", "YIWANG_HOME": str(settings.home), "YIWANG_ID_HASH_KEY": "k",
           "YIWANG_DATA_DIR": str(settings.data_dir)}
    out = subprocess.run([sys.executable, "-c", "from yiwang.cli import main; main()", "ingest", str(export),
                          "--as-of", "2025-06-30", "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    summary = json.loads(out.stdout)
    message = summary["tables"]["events"]["rejected"]
    assert "events.parquet" in message and "damaged" in message
    assert not [w for w in LIBRARY_WORDS if w.lower() in (message + out.stderr).lower()]
    assert summary["tables"]["people"]["inserted"] == 3 and summary["tables"]["enterprises"]["inserted"] == 2


def test_extra_columns_of_any_type_are_ignored(settings, db, tmp_path):
    export = write_export(tmp_path, catalog=CATALOG, enterprises=ENTERPRISES)
    people = pl.read_csv(PEOPLE.encode(), infer_schema=False)
    people.with_columns(
        pl.Series("phones", [["13800000000"], [], None], dtype=pl.List(pl.String)),
        pl.Series("address", [{"road": "南京路", "no": 1}, None, {"road": "淮海路", "no": 2}]),
        pl.Series("photo", [b"\x89PNG", None, b"\xff\xfe"], dtype=pl.Binary),
        pl.Series("scores", [[1, 2], [3, 4], [5, 6]], dtype=pl.Array(pl.Int64, 2)),
    ).with_columns(pl.when(pl.col("person_id") == "P3").then(pl.lit("X")).otherwise(pl.col("gender")).alias("gender")
    ).write_parquet(export / "people.parquet")
    s = ingest(settings, db, export)
    assert s.tables["people"].rejected is None and s.tables["people"].inserted == 2
    (bad,) = quarantined(db, s.ingest_id, "people")
    assert bad["reason"] == "bad_value" and "淮海路" in bad["raw"]


def test_integral_floats_are_whole_numbers(settings, db, tmp_path):
    export = write_export(tmp_path, catalog=CATALOG, people=PEOPLE)
    enterprises = pl.read_csv(ENTERPRISES.encode(), infer_schema=False)
    pl.concat([enterprises, enterprises.with_columns(pl.col("enterprise_id") + "x", pl.lit(None).alias("uscc"))]
              ).with_columns(pl.Series("employees", [6.0, 42.0, 6.5, float("nan")])).write_parquet(
        export / "enterprises.parquet")
    s = ingest(settings, db, export)
    assert dict(stored_records(db.conn, "enterprises", ["enterprise_id", "employees"])) == {"E1": 6, "E2": 42}
    got = {(r["line"], r["field"], r["reason"]) for r in quarantined(db, s.ingest_id, "enterprises")}
    assert got == {(3, "employees", "bad_integer"), (4, "employees", "missing_value")}

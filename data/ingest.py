"""Validated ingest of one export directory into the store.

Tables load in :data:`data.contract.INGEST_ORDER`; each file is judged on its own, so one rejected file
(unreadable, empty, wrong encoding, missing a required column) never stops the others. Every data row
read ends up either stored (inserted / updated / unchanged) or in the ``quarantine`` table, and the
summary checks that identity for every table before it is stored.

Registries (catalog, people, enterprises, licenses) are read whole into Polars (1M rows is ~100 MB),
validated with expressions, and upserted through a temporary staging table in one transaction. Events
are streamed in bounded batches: each batch is validated and its good rows written straight into their
month partitions under ``.pending`` names, which readers never see; only after the whole file has been
read cleanly (and in-file duplicate event_ids removed) are they renamed into place, so a file that
breaks half-way stores nothing. A crash leaves only ``.pending`` files, deleted by the next ingest.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import queue
import sqlite3
import threading
import time
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Iterator
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import sqlite_utils

from data import contract, reference
from data.contract import EVENTS, TABLES, Context, TableSpec
from data.errors import ContractError
from data.eventlog import (
    EVENT_SCHEMA,
    PENDING_SUFFIX,
    derived_event_id,
    event_id_hash,
    id_index_path,
    ingest_lock,
    live_files,
    month_dir,
    write_event_file,
    write_id_index,
    writer_lock,
)
from data.registry import forget_id_hashes, next_generation, write_snapshot, write_snapshot_frame
from data.settings import TIMEZONE, Settings
from data.store import RunLock, bind_id_hash_key

# Columns of each SQLite registry table (besides ingest_id), in table order.
DB_COLUMNS: dict[str, tuple[str, ...]] = {
    "catalog": (
        "item_id", "name", "department", "audience", "category", "life_events", "crowds", "occupations",
        "industries", "once_per_subject", "min_age", "max_age", "local_hukou_only", "renews_license",
    ),
    "people": (
        "person_id", "birth_date", "gender", "district", "local_hukou", "id_hash", "marital_status",
        "household_id", "occupation", "low_income", "disability",
    ),
    "enterprises": (
        "enterprise_id", "name", "industry", "district", "founded_on", "employees", "uscc", "legal_rep_id",
    ),
    "licenses": ("license_id", "holder_id", "license_type", "issued_on", "expires_on"),
}
# NOT NULL booleans of the catalogue: an absent value means "no".
DEFAULT_FALSE = {"once_per_subject", "local_hukou_only"}

ENCODING_SAMPLE_BYTES = 4 << 20
CSV_BLOCK_BYTES = 32 << 20


# ------------------------------------------------------------------------------------------------
# Summary
# ------------------------------------------------------------------------------------------------


@dataclass
class TableSummary:
    table: str
    source: str | None = None
    format: str | None = None
    encoding: str | None = None
    rows_in: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    quarantined: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    rejected: str | None = None  # the whole file was refused (its rows were not read): why
    note: str | None = None
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # CPU time of the whole process (all threads) while this table loaded

    @property
    def stored(self) -> int:
        return self.inserted + self.updated + self.unchanged

    @property
    def rows_per_s(self) -> float:
        return self.rows_in / self.seconds if self.seconds > 0 else 0.0

    def add_reasons(self, counts: dict[str, int]) -> None:
        for reason, n in counts.items():
            self.reasons[reason] = self.reasons.get(reason, 0) + n
        self.quarantined = sum(self.reasons.values())


@dataclass
class IngestSummary:
    ingest_id: int
    source: str
    as_of: str
    status: str = "running"
    started_at: str = ""
    finished_at: str | None = None
    tables: dict[str, TableSummary] = field(default_factory=dict)
    rekeyed: bool = False  # the store's ID-hash key was replaced by this ingest (--rekey)

    @property
    def rejected_files(self) -> list[str]:
        return [t.rejected for t in self.tables.values() if t.rejected]

    @property
    def rows_in(self) -> int:
        return sum(t.rows_in for t in self.tables.values())

    @property
    def quarantined(self) -> int:
        return sum(t.quarantined for t in self.tables.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "ingest_id": self.ingest_id,
            "source": self.source,
            "as_of": self.as_of,
            "status": self.status,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "rows_in": self.rows_in,
            "quarantined": self.quarantined,
            "rejected_files": self.rejected_files,
            "rekeyed": self.rekeyed,
            "tables": {
                name: {**asdict(t), "stored": t.stored, "rows_per_s": round(t.rows_per_s, 1)}
                for name, t in self.tables.items()
            },
        }


# ------------------------------------------------------------------------------------------------
# Reading files
# ------------------------------------------------------------------------------------------------


@dataclass
class Source:
    table: str
    path: Path
    format: str  # csv / parquet
    columns: list[str]
    encoding: str | None = None


def find_file(export_dir: Path, table: str) -> Path | None:
    """``<table>.csv`` or ``<table>.parquet`` in the export; both at once is ambiguous and refused."""
    found = [p for p in (export_dir / f"{table}.csv", export_dir / f"{table}.parquet") if p.exists()]
    if len(found) > 1:
        raise ContractError(f"{found[0]} and {found[1]} both exist: keep one file per table")
    return found[0] if found else None


def detect_encoding(path: Path) -> str:
    """``utf-8`` or ``gb18030`` (a superset of GBK and GB2312), judged on the first few MB."""
    with open(path, "rb") as f:
        head = f.read(ENCODING_SAMPLE_BYTES)
    if not head:
        raise ContractError(f"{path}: empty file (no header line)")
    if len(head) == ENCODING_SAMPLE_BYTES and b"\n" in head:
        head = head[: head.rindex(b"\n")]  # do not judge a character cut in half at the sample's end
    try:
        head.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as exc:
        utf8_error = exc
    try:
        head.decode("gb18030")
        return "gb18030"
    except UnicodeDecodeError:
        line = head[: utf8_error.start].count(b"\n") + 1
        raise ContractError(
            f"{path}: line {line}: byte 0x{head[utf8_error.start]:02x} at offset {utf8_error.start} is neither "
            "UTF-8 nor GB18030/GBK; re-export the file as UTF-8"
        ) from None


def open_source(table: str, path: Path) -> Source:
    """Check that ``path`` is readable, not empty, decodable, with a usable header; read no rows yet."""
    try:
        if path.is_dir():
            raise ContractError(f"{path}: is a directory, not a file")
        with open(path, "rb") as f:
            f.read(1)
    except PermissionError:
        raise ContractError(f"{path}: cannot be read (permission denied)") from None
    except OSError as exc:
        raise ContractError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if path.suffix == ".parquet":
        try:
            columns = pq.ParquetFile(path).schema_arrow.names
        except (pa.ArrowException, OSError) as exc:
            # (The library's words, e.g. "Couldn't deserialize thrift", say nothing to whoever made the export.)
            raise ContractError(f"{path}: not a readable Parquet file (no valid Parquet footer)") from None
        return Source(table, path, "parquet", list(columns))
    encoding = detect_encoding(path)
    with open(path, encoding=encoding, newline="") as f:
        header_line = f.readline().lstrip("\ufeff")
    if not header_line.strip():
        raise ContractError(f"{path}: line 1: empty header line")
    columns = [c.strip() for c in next(csv.reader([header_line]))]
    if "" in columns:
        raise ContractError(f"{path}: line 1: column {columns.index('') + 1} has an empty name")
    dupes = sorted({c for c in columns if columns.count(c) > 1})
    if dupes:
        raise ContractError(f"{path}: line 1: duplicate column name(s) {', '.join(dupes)}")
    if any("\x00" in c for c in columns):
        raise ContractError(f"{path}: line 1: NUL byte in the header")
    return Source(table, path, "csv", columns, encoding)


def check_columns(spec: TableSpec, src: Source) -> None:
    missing = [c for c in spec.required if c not in src.columns]
    if missing:
        raise ContractError(
            f"{src.path}: missing required column(s) {', '.join(missing)} "
            f"(table {spec.name} requires {', '.join(spec.required)}); file not loaded"
        )


@dataclass
class Batch:
    frame: pl.DataFrame  # the file's columns as strings (empty = null), plus _line
    malformed: list[tuple[int | None, str, str]]  # (line, text, reason) of CSV lines that are no record
    nul_columns: set[str] | None = None  # columns holding a NUL byte in this batch (None = not checked)


def read_batches(src: Source, batch_rows: int) -> Iterator[Batch]:
    """The file in batches of about ``batch_rows`` rows, every column a string, each row with its line.

    CSV ``_line`` is the record number with the header as 1 (equal to the physical line unless a quoted
    field holds a newline or blank lines precede the row); Parquet ``_line`` is the 1-based row number.
    """
    try:
        if src.format == "parquet":
            yield from _parquet_batches(src, batch_rows)
        else:
            yield from _csv_batches(src, batch_rows)
    except (OSError, pa.ArrowInvalid) as exc:
        if src.format == "parquet":  # pyarrow says OSError or ArrowInvalid for a damaged page, in its own words
            raise ContractError(
                f"{src.path}: the file is damaged (a data page cannot be read although its footer can): "
                "file not loaded"
            ) from None
        if not isinstance(exc, pa.ArrowInvalid):
            raise ContractError(f"{src.path}: cannot be read ({exc.strerror or 'I/O error'})") from None
        text = str(exc)
        if "UTF8" in text or "utf8" in text.lower():
            raise ContractError(f"{src.path}: invalid UTF-8 past the first {ENCODING_SAMPLE_BYTES >> 20} MB ({text})") from None
        raise ContractError(f"{src.path}: cannot be parsed ({text})") from None
    except UnicodeDecodeError as exc:
        raise ContractError(f"{src.path}: not valid {src.encoding} ({exc.reason} at byte {exc.start} of a block)") from None


class _QuoteTooLong(ContractError):
    """A quoted field runs past the parser's block: a stray quote swallowing more than a block."""


# A file whose stray quote swallows more than a block is read again as one block when nothing of it has
# been handed out yet (a registry is read whole) and it is at most this big.
CSV_RETRY_MAX_BYTES = 512 << 20


def _csv_batches(src: Source, batch_rows: int) -> Iterator[Batch]:
    yielded = False
    try:
        for batch in _csv_read(src, batch_rows, CSV_BLOCK_BYTES):
            yielded = True
            yield batch
    except _QuoteTooLong as exc:
        size = src.path.stat().st_size
        if yielded or size > CSV_RETRY_MAX_BYTES:
            raise ContractError(str(exc)) from None
        # One block the size of the file: the swallowed region then parses as one record, found and split
        # like any other broken quote.
        yield from _csv_read(src, batch_rows, size + 1)


def _csv_read(src: Source, batch_rows: int, block_bytes: int) -> Iterator[Batch]:
    malformed: list[tuple[int | None, str]] = []  # pyarrow's records of the wrong width: (record number, text)

    def on_bad_row(row) -> str:
        malformed.append((row.number, row.text))
        return "skip"

    with open(src.path, encoding=src.encoding, newline="") as f:
        names_in_file = next(csv.reader([f.readline().lstrip("\ufeff")]))
    kept = 0  # data rows read so far
    seen_bad = 0
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    broken = _BrokenQuotes(len(src.columns))

    def flush() -> Batch:
        nonlocal kept, seen_bad, pending, pending_rows
        table = pa.Table.from_batches(pending) if pending else None
        n = pending_rows
        nul_columns, newline_columns = _control_columns(table, src.columns) if table is not None else (set(), set())
        if table is not None:
            frame = pl.from_arrow(table)
            frame.columns = src.columns
        else:
            frame = pl.DataFrame(schema={c: pl.String for c in src.columns})
        frame = frame.with_columns(pl.Series("_line", _record_numbers(kept, n, malformed), dtype=pl.Int64))
        new_bad = malformed[seen_bad:]
        seen_bad = len(malformed)
        kept += n
        pending, pending_rows = [], 0
        frame, bad, extra = broken.split(frame, new_bad, newline_columns)
        if extra:
            nul_columns = None  # the re-read lines were not scanned
        return Batch(frame, bad, nul_columns)

    def parse_error(exc: pa.ArrowInvalid) -> Exception:
        if "straddl" not in str(exc):
            return exc
        near = kept + pending_rows + len(malformed) + 2
        return _QuoteTooLong(
            f"{src.path}: a quoted field opened at or after record {near} is not closed within "
            f"{block_bytes >> 20} MB: a stray '\"'? Fix the quoting and ingest again; file not loaded"
        )

    try:
        reader = pacsv.open_csv(
            src.path,
            # Single-threaded parsing is as fast here and is what gives malformed rows their numbers.
            read_options=pacsv.ReadOptions(
                use_threads=False, block_size=block_bytes, encoding=src.encoding or "utf8"
            ),
            parse_options=pacsv.ParseOptions(invalid_row_handler=on_bad_row, newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in names_in_file},
                null_values=[""],
                strings_can_be_null=True,
            ),
        )
        for rb in reader:
            pending.append(rb)
            pending_rows += rb.num_rows
            if pending_rows >= batch_rows:
                yield flush()
    except pa.ArrowInvalid as exc:
        raise parse_error(exc) from None
    yield flush()


# A quoted field may hold line breaks. One that spans this many lines or bytes, or whose later lines hold a
# whole record's worth of delimiters, is a `"` opened by mistake that swallowed the records after it.
BROKEN_QUOTE_LINES = 100
BROKEN_QUOTE_BYTES = 1 << 20


class _BrokenQuotes:
    """Finds records that are really a stray quote and the lines it swallowed, after pyarrow has parsed the
    batch (so a valid file pays for nothing but a scan of each column's bytes it already had), and re-reads
    their lines one by one. Keeps the line numbers right from there on: a record number counts each re-read
    line, so the rows after a broken quote keep their physical line numbers."""

    def __init__(self, ncols: int) -> None:
        self.ncols = ncols
        self.starts: list[int] = []  # pyarrow record number of each broken record, in order
        self.extra: list[int] = []  # lines each of them held beyond its first

    def shift(self, numbers: np.ndarray) -> np.ndarray:
        """Lines of pyarrow record numbers: each earlier broken record adds the lines it swallowed."""
        if not self.starts:
            return numbers
        cum = np.concatenate([[0], np.cumsum(self.extra)])
        return numbers + cum[np.searchsorted(np.array(self.starts), numbers, side="left")]

    def split(
        self, frame: pl.DataFrame, bad: list[tuple[int | None, str]], newline_columns: set[str]
    ) -> tuple[pl.DataFrame, list[tuple[int | None, str, str]], bool]:
        """``frame`` without the broken records plus the rows re-read from them, every malformed or broken
        line as ``(line, text, reason)``, and whether anything was re-read."""
        found: list[tuple[int, int | None, list[tuple[str, str | None]]]] = []  # (record, frame row, lines)
        for column in sorted(newline_columns, key=list(frame.columns).index):
            spans = frame.select(pl.col(column).str.contains("\n", literal=True).fill_null(False))
            for pos in spans.to_series().arg_true().to_list():
                if any(f[1] == pos for f in found):
                    continue
                row = frame.row(pos)
                if self._swallowed(row[frame.columns.index(column)]):
                    found.append((row[-1], pos, self._lines_of_fields(row[:-1], frame.columns.index(column))))
        kept_bad = []
        for number, text in bad:
            if number is not None and "\n" in text:
                found.append((number, None, [(line.removesuffix("\r"), None) for line in text.split("\n")]))
            else:
                kept_bad.append((number, text))
        if not found:
            lines = frame["_line"].to_numpy()
            if self.starts:
                frame = frame.with_columns(pl.Series("_line", self.shift(lines), dtype=pl.Int64))
            return frame, [(self._line(n), t, "malformed_row") for n, t in bad], False
        found.sort(key=lambda f: f[0])
        out_bad: list[tuple[int | None, str, str]] = []
        rows: list[list[str | None]] = []
        for number, _, lines in found:
            first = int(self.shift(np.array([number]))[0])
            self.starts.append(number)
            self.extra.append(len(lines) - 1)
            for j, (text, reason) in enumerate(lines):
                if reason is None and text.count('"') % 2:
                    reason = "broken_quote"
                if reason is None:
                    if not text.strip():
                        continue  # a blank line is no record, as everywhere in the file
                    fields = next(csv.reader([text]))
                    if len(fields) == self.ncols:
                        rows.append([v if v != "" else None for v in fields] + [first + j])
                        continue
                    reason = "malformed_row"
                out_bad.append((first + j, text, reason))
        drop = [f[1] for f in found if f[1] is not None]
        if drop:
            frame = frame.filter(~pl.int_range(pl.len()).is_in(drop))
        # Shifts apply only to records after each broken one: recompute from pyarrow's numbers.
        frame = frame.with_columns(pl.Series("_line", self.shift(frame["_line"].to_numpy()), dtype=pl.Int64))
        out_bad += [(self._line(n), t, "malformed_row") for n, t in kept_bad]
        if rows:
            reread = pl.DataFrame(rows, schema={**{c: pl.String for c in frame.columns[:-1]}, "_line": pl.Int64},
                                  orient="row")
            frame = pl.concat([frame, reread]).sort("_line", maintain_order=True)
        return frame, sorted(out_bad, key=lambda b: b[0] or 0), True

    def _line(self, number: int | None) -> int | None:
        return None if number is None else int(self.shift(np.array([number]))[0])

    def _swallowed(self, value: str) -> bool:
        if len(value) >= BROKEN_QUOTE_BYTES // 4 and len(value.encode()) >= BROKEN_QUOTE_BYTES:
            return True
        lines = value.split("\n")
        return len(lines) > BROKEN_QUOTE_LINES or any(line.count(",") >= self.ncols - 1 for line in lines[1:])

    @staticmethod
    def _lines_of_fields(fields: tuple, k: int) -> list[tuple[str, str | None]]:
        """The lines a record with a stray quote opening field ``k`` came from, rebuilt from its fields: the
        first and (when the quote was closed) the last line are broken; the ones between are as they were
        in the file (a quote inside them was doubled, so the parser halved it)."""

        def text(v: str | None) -> str:
            if v is None:
                return ""
            return '"' + v.replace('"', '""') + '"' if any(ch in v for ch in ',"\r\n') else v

        segments = [s.removesuffix("\r") for s in fields[k].split("\n")]
        head = ",".join(text(v) for v in fields[:k]) + ("," if k else "")
        lines: list[tuple[str, str | None]] = [(head + '"' + segments[0].replace('"', '""'), "broken_quote")]
        lines += [(s.replace('"', '""'), None) for s in segments[1:-1]]
        if segments[-1] != "":
            tail = "".join("," + text(v) for v in fields[k + 1 :])
            lines.append((segments[-1].replace('"', '""') + '"' + tail, "broken_quote"))
        return lines


def _control_columns(table: pa.Table, names: list[str]) -> tuple[set[str], set[str]]:
    """Columns with a NUL byte, and columns with a line break, anywhere: one vectorised minimum over each
    column's character buffer (both are control characters, below the space), and only where that finds
    one a closer look; so the per-row NUL rule, and the broken-quote check, run only where they can fire."""
    nul, newline = set(), set()
    for name, column in zip(names, table.columns):
        for chunk in column.chunks:
            data = chunk.buffers()[2]
            if data is None or not data.size:
                continue
            chars = np.frombuffer(data, dtype=np.uint8)
            if chars.min() >= 0x20:
                continue
            if not chars.all():
                nul.add(name)
            if (chars == 0x0A).any():
                newline.add(name)
    return nul, newline


def _record_numbers(start: int, n: int, malformed: list[tuple[int | None, str]]) -> np.ndarray:
    """Record numbers (header = 1) of kept rows ``start .. start+n-1``, skipping malformed records."""
    ordinals = np.arange(start, start + n, dtype=np.int64)
    bad = np.array(sorted(num for num, _ in malformed if num is not None), dtype=np.int64)
    if bad.size == 0:
        return ordinals + 2
    # Malformed record i (sorted) sits just before kept ordinal bad[i] - i - 2.
    slots = bad - np.arange(bad.size) - 2
    return ordinals + 2 + np.searchsorted(slots, ordinals, side="right")


def _parquet_batches(src: Source, batch_rows: int) -> Iterator[Batch]:
    pf = pq.ParquetFile(src.path)
    done = 0
    for rb in pf.iter_batches(batch_size=batch_rows):
        frame = pl.from_arrow(pa.Table.from_batches([rb]))
        frame = frame.with_columns([_as_string(frame, c) for c in frame.columns])
        frame = frame.with_columns(pl.int_range(done + 1, done + 1 + frame.height, dtype=pl.Int64).alias("_line"))
        done += frame.height
        yield Batch(frame, [])
    if done == 0:
        yield Batch(pl.DataFrame(schema={**{c: pl.String for c in src.columns}, "_line": pl.Int64}), [])


def _as_string(frame: pl.DataFrame, name: str) -> pl.Series:
    """Typed Parquet values as the strings the contract parses (so CSV and Parquet share one validator).

    Whole numbers stored as floats (pandas writes an integer column with nulls as float64) read as
    integers; NaN is missing. Nested values (lists, structs) are written as JSON and binary values
    that are not UTF-8 as hex: in an extra column they only ever reach the quarantine's raw row.
    """
    dtype = frame.schema[name]
    col = pl.col(name)
    if dtype.is_float():
        whole = col.is_finite() & (col == col.floor()) & (col.abs() < 2.0**63)
        text = pl.when(whole).then(col.cast(pl.Int64, strict=False).cast(pl.String)).otherwise(col.cast(pl.String))
        return frame.select(pl.when(col.is_nan()).then(None).otherwise(text).alias(name)).to_series()
    if dtype.is_nested():
        text = pl.struct(col.alias("v")).struct.json_encode().str.slice(len('{"v":')).str.strip_suffix("}")
        return frame.select(pl.when(col.is_null()).then(None).otherwise(text).alias(name)).to_series()
    if dtype == pl.Binary:
        try:
            return frame.select(_string_expr(name, pl.String)).to_series()
        except pl.exceptions.PolarsError:
            return frame.select(col.bin.encode("hex").alias(name)).to_series()
    try:
        return frame.select(_string_expr(name, dtype)).to_series()
    except pl.exceptions.PolarsError:  # a type with no text form (e.g. an extension type): nothing to check
        return pl.Series(name, [None] * frame.height, dtype=pl.String)


def _string_expr(name: str, dtype: pl.DataType) -> pl.Expr:
    col = pl.col(name)
    if dtype == pl.Date:
        return col.dt.strftime("%Y-%m-%d").alias(name)
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is not None:
            return col.dt.convert_time_zone("UTC").dt.strftime("%Y-%m-%dT%H:%M:%S%.6f+00:00").alias(name)
        return col.dt.strftime("%Y-%m-%dT%H:%M:%S%.6f").alias(name)
    if dtype == pl.Boolean:
        return col.cast(pl.Int8).cast(pl.String).alias(name)
    as_text = col.cast(pl.String)
    return pl.when(as_text != "").then(as_text).otherwise(None).alias(name)  # empty = null, as in CSV


# ------------------------------------------------------------------------------------------------
# Store helpers
# ------------------------------------------------------------------------------------------------


def _quarantine_rows(
    conn: sqlite3.Connection, ingest_id: int, table: str, source: Path, rows: pl.DataFrame
) -> dict[str, int]:
    """Insert rows with columns _line, _field, _reason, _raw; returns counts per reason."""
    if rows.height == 0:
        return {}
    data = rows.select(
        pl.lit(ingest_id, dtype=pl.Int64).alias("ingest_id"),
        pl.lit(table).alias("table_name"),
        pl.lit(str(source)).alias("source_file"),
        pl.col("_line"),
        pl.col("_field"),
        pl.col("_reason"),
        pl.col("_raw"),
    )
    conn.executemany(
        "INSERT INTO quarantine (ingest_id, table_name, source_file, line, field, reason, raw) VALUES (?,?,?,?,?,?,?)",
        _tuples(data),
    )
    counts = rows.group_by("_reason").len()
    return dict(zip(counts["_reason"].to_list(), counts["len"].to_list()))


def _tuples(df: pl.DataFrame, chunk_rows: int = 100_000) -> Iterator[tuple]:
    """Row tuples for executemany: column lists zipped in C (several times faster than iter_rows), a
    slice at a time so a 5M-row table never exists as Python objects all at once."""
    for chunk in df.iter_slices(chunk_rows):
        yield from zip(*(s.to_list() for s in chunk.iter_columns()))


def _malformed_frame(bad: list[tuple[int | None, str, str]]) -> pl.DataFrame:
    """Quarantine rows for CSV lines that could not be read as a record (``malformed_row``,
    ``broken_quote``): their text as it came, with anything shaped like a resident ID masked."""
    text = pl.Series("text", [t for _, t, _ in bad], dtype=pl.String)
    return pl.DataFrame(
        {"_line": [n for n, _, _ in bad], "_field": [None] * len(bad), "_reason": [r for _, _, r in bad]},
        schema={"_line": pl.Int64, "_field": pl.String, "_reason": pl.String},
    ).with_columns(
        pl.struct(contract.mask_resident_ids(pl.lit(text))).struct.json_encode().alias("_raw")
    )


def _rejected_rows(original: pl.DataFrame, checked: pl.DataFrame) -> pl.DataFrame:
    """The rows ``checked`` marks bad, with their raw text as it came in the file (IDs masked)."""
    bad = checked["_reason"].is_not_null()
    file_cols = [c for c in original.columns if c != "_line"]
    raw = original.filter(bad).select(pl.col("_line"), contract.raw_json(file_cols).alias("_raw"))
    return raw.with_columns(checked.filter(bad).select("_field", "_reason")).select("_line", "_field", "_reason", "_raw")


def _ids(conn: sqlite3.Connection, *columns: tuple[str, str]) -> pl.Series:
    """Every value of ``(table, column)`` pairs as one Series, built by SQLite as one NUL-separated string
    per table (3x faster than fetching a million rows as Python tuples). Stored ids hold no NUL byte:
    the contract quarantines any row that has one."""
    parts = []
    step = 1_000_000  # rowids per string: far below SQLite's 1 GB string limit
    for table, column in columns:
        top = conn.execute(f"SELECT max(rowid) FROM {table}").fetchone()[0] or 0
        for lo in range(0, top + 1, step):
            text = conn.execute(
                f"SELECT group_concat({column}, char(0)) FROM {table} WHERE rowid >= ? AND rowid < ?", (lo, lo + step)
            ).fetchone()[0]
            if text is not None:
                parts.append(text)
    if not parts:
        return pl.Series([], dtype=pl.String)
    return pl.Series(parts, dtype=pl.String).str.split("\x00").explode()


def _db_frame(spec: TableSpec, ok: pl.DataFrame, key: bytes) -> pl.DataFrame:
    """The valid rows in the SQLite table's column order and types (dates ISO, booleans 0/1)."""
    present = set(ok.columns)
    exprs = []
    for name in DB_COLUMNS[spec.name]:
        if name == "id_hash":
            exprs.append(pl.lit(None, dtype=pl.String).alias(name))  # filled below, outside Polars
            continue
        col = spec.column(name)
        if name not in present:
            exprs.append(pl.lit(0 if name in DEFAULT_FALSE else None).alias(name))
        elif col.kind == "date":
            exprs.append(pl.col(f"_p_{name}").cast(pl.String).alias(name))
        elif col.kind == "bool":
            e = pl.col(f"_p_{name}").cast(pl.Int64)
            exprs.append((e.fill_null(0) if name in DEFAULT_FALSE else e).alias(name))
        elif col.kind == "int":
            exprs.append(pl.col(f"_p_{name}").alias(name))
        else:
            exprs.append(contract.stored_text(spec, name, pl.col(name)).alias(name))
    out = ok.select(exprs)
    if spec.name == "people" and "id_number" in present:
        # HMAC has no Polars kernel: one C call chain per id, from precomputed keyed states.
        numbers = ok["id_number"].str.to_uppercase().to_list()
        hmac_hex = _hmac_sha256_hex(key)
        hashes = [None if n is None else hmac_hex(n.encode()) for n in numbers]
        out = out.with_columns(pl.Series("id_hash", hashes, dtype=pl.String))
    return out


def _hmac_sha256_hex(key: bytes):
    """``lambda msg: hmac.new(key, msg, sha256).hexdigest()``, 2.4x faster over a million short ids: the
    keyed inner and outer SHA-256 states (RFC 2104) are computed once and copied per message, where
    ``hmac.digest`` re-derives them on every call. The stdlib's own ``HMAC.copy()`` of a keyed object is the
    same idea but 2.3x slower than this (200k ids: 0.56 s against 0.24 s), so the stdlib is the reference in
    the tests, not the path."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key)).copy
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key)).copy

    def digest_hex(msg: bytes) -> str:
        h = inner()
        h.update(msg)
        o = outer()
        o.update(h.digest())
        return o.hexdigest()

    return digest_hex


def _upsert(conn: sqlite3.Connection, table: str, rows: pl.DataFrame, ingest_id: int) -> tuple[int, int, int]:
    """Upsert by primary key through a staging table; returns (inserted, updated, unchanged)."""
    cols = DB_COLUMNS[table]
    key = cols[0]
    col_list = ", ".join(cols)
    same = " AND ".join(f"m.{c} IS s.{c}" for c in cols[1:])
    same_excluded = " AND ".join(f"{table}.{c} IS excluded.{c}" for c in cols[1:])
    placeholders = ", ".join("?" * (len(cols) + 1))
    if conn.execute(f"SELECT NOT EXISTS (SELECT 1 FROM main.{table})").fetchone()[0]:
        # First load of the table: nothing to compare with, so skip the staging pass (half the work), and
        # build the secondary indexes once at the end rather than row by row (a third less CPU).
        indexes = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL", (table,)
        ).fetchall()
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        conn.executemany(
            f"INSERT INTO main.{table} ({col_list}, ingest_id) VALUES ({placeholders})",
            _tuples(rows.with_columns(pl.lit(ingest_id, dtype=pl.Int64).alias("ingest_id"))),
        )
        for _, sql in indexes:
            conn.execute(sql)
        return rows.height, 0, 0
    conn.execute("DROP TABLE IF EXISTS temp._stage")
    conn.execute(f"CREATE TEMP TABLE _stage AS SELECT {col_list} FROM main.{table} WHERE 0")
    conn.executemany(f"INSERT INTO temp._stage VALUES ({', '.join('?' * len(cols))})", _tuples(rows))
    inserted = conn.execute(
        f"SELECT count(*) FROM temp._stage s WHERE NOT EXISTS (SELECT 1 FROM main.{table} m WHERE m.{key} = s.{key})"
    ).fetchone()[0]
    unchanged = conn.execute(
        f"SELECT count(*) FROM temp._stage s JOIN main.{table} m ON m.{key} = s.{key} WHERE {same}"
    ).fetchone()[0]
    updates = ", ".join(f"{c} = excluded.{c}" for c in cols[1:])
    conn.execute(
        f"INSERT INTO main.{table} ({col_list}, ingest_id) SELECT {col_list}, ? FROM temp._stage WHERE true "
        f"ON CONFLICT({key}) DO UPDATE SET {updates}, ingest_id = excluded.ingest_id WHERE NOT ({same_excluded})",
        (ingest_id,),
    )
    conn.execute("DROP TABLE temp._stage")
    return inserted, rows.height - inserted - unchanged, unchanged


# ------------------------------------------------------------------------------------------------
# Loading tables
# ------------------------------------------------------------------------------------------------


class _Progress:
    """Adapter over an optional rich ``Progress`` (what the CLI passes); silent when there is none."""

    def __init__(self, progress) -> None:
        self._p = progress
        self._tasks: dict[str, Any] = {}

    def update(self, table: str, done: int, total: int | None = None) -> None:
        if self._p is None:
            return
        if table not in self._tasks:
            self._tasks[table] = self._p.add_task(f"ingest {table}", total=total)
        self._p.update(self._tasks[table], completed=done, total=total)


def _load_registry(
    settings: Settings, conn: sqlite3.Connection, ingest_id: int, src: Source, ctx: Context, ts: TableSummary, bar: _Progress
) -> None:
    spec = TABLES[src.table]
    batches = list(read_batches(src, batch_rows=10**12))  # registries are read whole: duplicates span the file
    original = pl.concat([b.frame for b in batches], how="vertical")
    malformed = [m for b in batches for m in b.malformed]
    nul = None if any(b.nul_columns is None for b in batches) else set().union(*(b.nul_columns for b in batches))
    ts.rows_in = original.height + len(malformed)
    bar.update(src.table, 0, ts.rows_in)
    checked = contract.mark_duplicates(contract.validate(spec, original, ctx, nul_columns=nul), spec.key)
    rejected = pl.concat([_rejected_rows(original, checked), _malformed_frame(malformed)], how="vertical")
    ok = checked if rejected.height == 0 else checked.filter(pl.col("_reason").is_null())
    rows = _db_frame(spec, ok, settings.hash_key())
    # Only ``rows`` and ``rejected`` are needed from here: the file's frames go before the SQLite load
    # (a small saving: the 5.1M-licence file alone peaked at 2.45 GB instead of 2.50 GB).
    del batches, original, checked, ok
    conn.execute("BEGIN IMMEDIATE")
    try:
        ts.inserted, ts.updated, ts.unchanged = _upsert(conn, spec.name, rows, ingest_id)
        ts.add_reasons(_quarantine_rows(conn, ingest_id, spec.name, src.path, rejected))
        generation = next_generation(conn, spec.name)  # the snapshot lags SQLite until written from this
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    if ts.inserted == rows.height and ts.inserted == conn.execute(f"SELECT count(*) FROM {spec.name}").fetchone()[0]:
        # The table holds exactly these rows: snapshot them from memory instead of reading SQLite back.
        write_snapshot_frame(settings.home, spec.name, rows, generation)
    else:
        write_snapshot(settings.home, spec.name, conn)
    bar.update(src.table, ts.rows_in, ts.rows_in)


def _prefetch(batches: Iterator[Batch]) -> Iterator[Batch]:
    """Read the next batch in a thread while the caller validates this one (Arrow's CSV parser and
    Polars both release the GIL, so on two cores reading mostly hides behind the checks)."""
    q: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for b in batches:
                while not stop.is_set():
                    try:
                        q.put(b, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            q.put(exc)

    worker = threading.Thread(target=produce, name="ingest-reader", daemon=True)
    worker.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                pass
            worker.join(timeout=0.1)


def _fill_event_ids(ok: pl.DataFrame) -> pl.DataFrame:
    """Derive event_id where the export gave none (only those rows: deriving costs a string build)."""
    need = ok["event_id"].is_null()
    if not need.any():
        return ok
    idx = need.arg_true()
    derived = ok.filter(need).select(derived_event_id().alias("event_id"))["event_id"]
    return ok.with_columns(ok["event_id"].scatter(idx, derived))


_EVENT_COLS: list[str] = [c for c in EVENT_SCHEMA if c != "ingest_id"]
_STORED_CACHE_MONTHS = 4


class _StoredIds:
    """The event_ids already in the log, per month partition, read once per month when first needed
    (only a re-ingest pays for it: a month with no stored file costs a directory listing).

    The files a month held when first looked at are remembered: at commit, :meth:`stored_since` gives
    the ids published there since (by the API, while this ingest read its file), which are then checked
    under the writer lock."""

    def __init__(self, events_dir: Path) -> None:
        self.events_dir = events_dir
        self._cache: dict[int, tuple[pl.Series, pl.Series] | None] = {}
        self._seen: dict[int, set[str]] = {}

    def _load(self, month: int) -> tuple[pl.Series, pl.Series] | None:
        if month not in self._cache:
            files = live_files(month_dir(self.events_dir, month))
            self._seen.setdefault(month, {f.name for f in files})
            if not files:
                self._cache[month] = None
                return None
            loaded = [m for m, v in self._cache.items() if v is not None]
            for m in loaded[: max(0, len(loaded) - _STORED_CACHE_MONTHS + 1)]:
                del self._cache[m]  # bounded memory; re-read if that month comes back
            ids = pl.scan_parquet(files).select("event_id").collect()["event_id"]
            self._cache[month] = (ids.hash().unique().implode(), ids.implode())
        return self._cache[month]

    def already_stored(self, month: int, part: pl.DataFrame) -> pl.Series | None:
        """Per row of ``part`` (one month): is its event_id already stored? None when nothing is."""
        stored = self._load(month)
        if stored is None:
            return None
        hashes, ids = stored
        # Hash membership first; only the rows it flags are compared as strings (exact).
        cand = part["_h"].is_in(hashes)
        if not cand.any():
            return None
        idx = cand.arg_true()
        exact = part["event_id"].gather(idx).is_in(ids)
        return pl.Series("_already", [False], dtype=pl.Boolean).new_from_index(0, part.height).scatter(idx, exact)

    def stored_since(self, month: int) -> pl.Series | None:
        """Event ids in files of ``month`` published after it was first looked at (call under the
        writer lock, so none can appear meanwhile); None when there are none. A merge of files already
        seen counts as new: re-reading a few ids already checked is harmless."""
        new = [f for f in live_files(month_dir(self.events_dir, month)) if f.name not in self._seen.get(month, set())]
        if not new:
            return None
        return pl.scan_parquet(new).select("event_id").collect()["event_id"]


@dataclass
class _Pending:
    """One event file this ingest wrote under a ``.pending`` name; ``meta`` has _h and _line per row."""

    path: Path
    month: int
    already: bool  # rows whose event_id was already stored: counted unchanged, the file is then deleted
    meta: pl.DataFrame
    drop: list[int] = field(default_factory=list)  # row positions of ``meta`` to leave out (see _drop_rows)
    late: int = 0  # rows left out because another writer published their event_id while this ingest ran

    @property
    def index_path(self) -> Path:
        """Its id index, pending like the file (written for new rows only: ``already`` files go)."""
        final = id_index_path(self.path.with_name(self.path.name.removesuffix(PENDING_SUFFIX)))
        return final.with_name(final.name + PENDING_SUFFIX)


class _Writer:
    """Writes event files in ``depth`` background threads (pyarrow's encoder releases the GIL), so the next
    batch is checked while earlier ones are compressed; at most ``depth`` files wait, bounding memory. One
    writer thread could not keep up with the checks on two cores (the checks waited a quarter of the time)."""

    def __init__(self, events_dir: Path, ingest_id: int, depth: int = 2) -> None:
        self.events_dir, self.ingest_id, self.depth = events_dir, ingest_id, depth
        self.written: list[_Pending] = []
        self._pool = ThreadPoolExecutor(max_workers=depth, thread_name_prefix="ingest-writer")
        self._queue: deque[Future] = deque()

    def write(self, k: int, month: int, rows: pl.DataFrame, already: bool) -> None:
        d = month_dir(self.events_dir, month)
        d.mkdir(parents=True, exist_ok=True)
        tag = "a" if already else "n"
        path = d / f"part-{self.ingest_id:06d}-{k:05d}{tag}-{uuid.uuid4().hex[:8]}.parquet{PENDING_SUFFIX}"
        out = rows.select([*_EVENT_COLS, pl.lit(self.ingest_id, dtype=pl.Int64).alias("ingest_id")])
        pending = _Pending(path, month, already, rows.select("_h", "_line"))
        self.written.append(pending)
        self._queue.append(self._pool.submit(_write_pending, out, pending))
        while len(self._queue) > self.depth:
            self._queue.popleft().result()

    def finish(self) -> None:
        """Wait for every queued write, raising the first failure."""
        while self._queue:
            self._queue.popleft().result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._queue.clear()


def _write_pending(out: pl.DataFrame, p: _Pending) -> None:
    write_event_file(out, p.path)
    if not p.already:
        write_id_index(p.meta["_h"].to_numpy(), p.index_path)


def _drop_stored_since(stored: _StoredIds, written: list[_Pending]) -> int:
    """Mark (in ``drop``) the rows to be published whose event_id another writer published while this
    ingest was reading its file; returns how many. Exact: hash candidates are confirmed as strings."""
    late = 0
    for month in sorted({p.month for p in written if not p.already}):
        ids = stored.stored_since(month)
        if ids is None:
            continue
        hashes = event_id_hash(ids).implode()
        for p in written:
            if p.already or p.month != month or p.meta.height == 0:
                continue
            pos = p.meta["_h"].is_in(hashes).arg_true()
            if not pos.len():
                continue
            cand = pl.read_parquet(p.path, columns=["event_id"])["event_id"].gather(pos)
            hit = set(pos.filter(cand.is_in(ids.implode())).to_list()) - set(p.drop)
            p.drop.extend(sorted(hit))
            p.late += len(hit)
            late += len(hit)
    return late


def _drop_rows(written: list[_Pending]) -> None:
    """Rewrite the files to be published without their ``drop`` rows (``meta`` follows; ``drop`` empties).
    Their id indexes stay: a superset is harmless."""
    for p in written:
        if not p.drop or p.already:
            continue
        mask = pl.Series([True]).new_from_index(0, p.meta.height).scatter(p.drop, False)
        if mask.any():
            write_event_file(pl.read_parquet(p.path).filter(mask), p.path)
        else:
            p.path.unlink()
            p.index_path.unlink()
        p.meta = p.meta.filter(mask)
        p.drop = []


def _duplicate_hashes(written: list[_Pending]) -> np.ndarray:
    """Hashes occurring more than once in the file (a sort beats a hash table on 30M keys by 4x)."""
    if not written:
        return np.empty(0, dtype=np.uint64)
    h = np.concatenate([p.meta["_h"].to_numpy() for p in written])
    h.sort()  # in place: no second 8-bytes-per-event copy at the end of a 30M-row file
    return np.unique(h[1:][h[1:] == h[:-1]])


def _in_file_duplicates(written: list[_Pending], cand: np.ndarray) -> pl.DataFrame:
    """Rows whose event_id an earlier valid row of the file already has (exact string comparison among
    the hash candidates); marks them in ``written[i].drop`` and returns them for the quarantine."""
    cand_s = pl.Series(cand, dtype=pl.UInt64).implode()
    rows = []
    for i, p in enumerate(written):
        pos = p.meta["_h"].is_in(cand_s).arg_true()
        if pos.len():
            data = pl.read_parquet(p.path).gather(pos)
            rows.append(data.with_columns(p.meta["_line"].gather(pos), pl.lit(i).alias("_f"), pos.alias("_r")))
    cand_rows = pl.concat(rows).sort("_line")
    dup = cand_rows.filter(~pl.col("event_id").is_first_distinct())
    for (f,), part in dup.partition_by("_f", as_dict=True).items():
        written[f].drop.extend(part["_r"].to_list())
    cols = ["event_id", "subject_id", "item_id", "action", "ts", "channel"]
    return dup.select(
        pl.col("_line"),
        pl.lit("event_id").alias("_field"),
        pl.lit("duplicate_key").alias("_reason"),
        pl.struct([pl.col(c).cast(pl.String) for c in cols]).struct.json_encode().alias("_raw"),
    )


def _month_parts(ok: pl.DataFrame) -> list[tuple[int, pl.DataFrame]]:
    """The batch split by ``_month``, rows kept in file order. An export in time order (the usual case)
    gives contiguous runs, taken as zero-copy slices; otherwise partition_by copies them out."""
    month = ok["_month"]
    if month.len() == 0:
        return []
    if month.is_sorted():
        values = month.unique(maintain_order=True)
        starts = month.search_sorted(values, side="left").to_list()
        ends = [*starts[1:], month.len()]
        return [(m, ok.slice(a, b - a)) for m, a, b in zip(values.to_list(), starts, ends)]
    return [(m, p) for (m,), p in ok.partition_by("_month", as_dict=True, maintain_order=True).items()]


def _load_events(
    settings: Settings, conn: sqlite3.Connection, ingest_id: int, src: Source, ctx: Context, ts: TableSummary, bar: _Progress
) -> None:
    """Stream the file: each batch is validated, its bad rows set aside in a ``.pending`` Parquet file and
    its good rows written straight into their month partitions under ``.pending`` names (with their id
    indexes). Once the whole file has been read, in-file duplicate event_ids are found (64-bit hashes,
    confirmed exactly); then, under the writer lock and in one transaction, the quarantine is stored,
    rows whose id another writer (the API) published meanwhile are dropped, and the files are renamed
    into place. Anything going wrong before that deletes the pending files and rolls back, so a file
    that breaks half-way stores nothing.

    While the file is read, this holds :func:`~data.eventlog.ingest_lock` only, and no SQLite
    transaction: API posts go on meanwhile (each waits at most for the commit: a re-check against what
    the API published, the quarantine insert, and renames)."""
    events_dir = Path(settings.events_dir)
    with ingest_lock(events_dir):
        stored = _StoredIds(events_dir)
        writer = _Writer(events_dir, ingest_id)
        written = writer.written
        set_aside: list[Path] = []  # bad rows per batch, stored only if the whole file reads cleanly
        try:
            for k, batch in enumerate(_prefetch(read_batches(src, settings.ingest_batch_rows))):
                ts.rows_in += batch.frame.height + len(batch.malformed)
                checked = contract.validate(EVENTS, batch.frame, ctx, trim=False, nul_columns=batch.nul_columns)
                rejected = pl.concat(
                    [_rejected_rows(batch.frame, checked), _malformed_frame(batch.malformed)], how="vertical"
                )
                if rejected.height:
                    set_aside.append(events_dir / f".quarantine-{ingest_id:06d}-{k:05d}.parquet{PENDING_SUFFIX}")
                    rejected.write_parquet(set_aside[-1])
                ok = checked if rejected.height == 0 else checked.filter(pl.col("_reason").is_null())
                given_id = pl.col("event_id") if "event_id" in ok.columns else pl.lit(None, dtype=pl.String)
                channel = pl.col("channel") if "channel" in ok.columns else pl.lit(None, dtype=pl.String)
                ok = ok.select(
                    given_id.alias("event_id"), pl.col("subject_id"), pl.col("item_id"), pl.col("action"),
                    pl.col("_p_ts").alias("ts"), channel.alias("channel"), pl.col("_line"),
                )
                ok = _fill_event_ids(ok).with_columns(
                    pl.col("event_id").hash().alias("_h"),
                    (pl.col("ts").dt.year() * 100 + pl.col("ts").dt.month()).alias("_month"),
                )
                parts = _month_parts(ok)
                for month, part in parts:
                    already = stored.already_stored(month, part)
                    if already is None:
                        writer.write(k, month, part, False)
                    else:
                        for flag, rows in ((False, part.filter(~already)), (True, part.filter(already))):
                            if rows.height:
                                writer.write(k, month, rows, flag)
                bar.update("events", ts.rows_in)
            writer.finish()

            cand = _duplicate_hashes(written)
            in_file_duplicates = _in_file_duplicates(written, cand) if cand.size else None
            _drop_rows(written)  # before the writer lock: a file with duplicates spread through it is long to rewrite
            with writer_lock(events_dir):
                conn.execute("BEGIN IMMEDIATE")
                for path in set_aside:
                    ts.add_reasons(_quarantine_rows(conn, ingest_id, "events", src.path, pl.read_parquet(path)))
                if in_file_duplicates is not None:
                    ts.add_reasons(_quarantine_rows(conn, ingest_id, "events", src.path, in_file_duplicates))
                if _drop_stored_since(stored, written):
                    _drop_rows(written)
                conn.execute("COMMIT")
                for p in written:
                    n = p.meta.height - len(p.drop)
                    if p.already:
                        ts.unchanged += n
                        p.path.unlink(missing_ok=True)
                    else:
                        ts.inserted += n
                        ts.unchanged += p.late
                        if n:  # the id index first: a visible file always has one
                            for path in (p.index_path, p.path):
                                os.replace(path, path.with_name(path.name.removesuffix(PENDING_SUFFIX)))
        except BaseException:
            writer.close()  # no write may still be running when its file is deleted
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for p in written:
                p.path.unlink(missing_ok=True)
                p.index_path.unlink(missing_ok=True)
            raise
        finally:
            writer.close()
            for path in set_aside:
                path.unlink(missing_ok=True)
    bar.update("events", ts.rows_in, ts.rows_in)


# ------------------------------------------------------------------------------------------------
# Entry point
# ------------------------------------------------------------------------------------------------


def _today_shanghai() -> date:
    return datetime.now(ZoneInfo(TIMEZONE)).date()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _license_types(settings: Settings) -> pl.Series | None:
    path = Path(settings.data_dir) / reference.LICENSE_TYPES_FILE
    try:
        types = reference.read_reference_table(settings.data_dir, reference.LICENSE_TYPES_FILE)
        return None if types is None else types["license_type"].str.strip_chars()
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise ContractError(f"{path}: cannot read the licence-type catalogue ({exc})") from None


def ingest_export(
    settings: Settings,
    db: sqlite_utils.Database,
    export_dir: Path,
    as_of: date | None = None,
    progress=None,
    *,
    rekey: bool = False,
) -> IngestSummary:
    """Validate and load every table file of ``export_dir``; returns (and stores) the summary.

    A file the contract refuses as a whole is reported in ``summary.tables[t].rejected`` (its rows are
    not read or counted) and the other files are still loaded. Raises :class:`ContractError` only when
    the directory itself is unusable (missing, or holding no table file at all), and
    :class:`ConfigError` when the ID-hash key is not the store's (see :func:`data.store.bind_id_hash_key`;
    ``rekey`` replaces it).
    """
    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        raise ContractError(f"{export_dir}: no such export directory")
    as_of = as_of or _today_shanghai()
    conn = db.conn
    _, rekeyed = bind_id_hash_key(conn, settings, forget_id_hashes, rekey=rekey)
    # A 256 MB page cache for the bulk upserts (the 2 MB default thrashes on million-row B-tree inserts),
    # and the staging table in memory; restored when done, the connection may be shared.
    saved_pragmas = {p: conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("cache_size", "temp_store")}
    conn.execute("PRAGMA cache_size = -262144")
    conn.execute("PRAGMA temp_store = MEMORY")
    cur = conn.execute(
        "INSERT INTO ingests (source, started_at, as_of, status) VALUES (?, ?, ?, 'running')",
        (str(export_dir), _now(), as_of.isoformat()),
    )
    ingest_id = cur.lastrowid
    # Held until the outcome is recorded: a 'running' row whose lock is free is a dead run (data.store).
    run_lock = RunLock(settings.home, f"ingest-{ingest_id}").acquire()
    conn.commit()
    summary = IngestSummary(ingest_id, str(export_dir), as_of.isoformat(), started_at=_now(), rekeyed=rekeyed)
    bar = _Progress(progress)
    try:
        license_types = _license_types(settings)
        files: dict[str, Path | None] = {}
        for table in contract.INGEST_ORDER:
            try:
                files[table] = find_file(export_dir, table)
            except ContractError as exc:
                files[table] = None
                summary.tables[table] = TableSummary(table, rejected=str(exc))
        if not any(files.values()) and not summary.tables:
            raise ContractError(
                f"{export_dir}: no table files found (expected any of "
                + ", ".join(f"{t}.csv/.parquet" for t in contract.INGEST_ORDER) + ")"
            )
        if files["catalog"] is None and "catalog" not in summary.tables:
            fallback = Path(settings.data_dir) / reference.CATALOG_FILE
            files["catalog"] = fallback if fallback.exists() else None

        for table in contract.INGEST_ORDER:
            path = files.get(table)
            if path is None:
                continue
            ts = summary.tables[table] = TableSummary(table, source=str(path))
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                src = open_source(table, path)
                ts.format, ts.encoding = src.format, src.encoding
                if src.encoding == "gb18030":
                    ts.note = "decoded from GB18030/GBK (the contract asks for UTF-8)"
                check_columns(TABLES[table], src)
                ctx = Context(
                    as_of=as_of,
                    known_items=_ids(conn, ("catalog", "item_id")),
                    known_subjects=None
                    if table in ("catalog", "people", "enterprises")
                    else _ids(conn, ("people", "person_id"), ("enterprises", "enterprise_id")),
                    license_types=license_types,
                    keep_unknown_subjects=settings.unknown_subject_events == "keep",
                )
                if table == "events":
                    _load_events(settings, conn, ingest_id, src, ctx, ts, bar)
                else:
                    _load_registry(settings, conn, ingest_id, src, ctx, ts, bar)
            except ContractError as exc:
                # The file is refused as a whole: nothing of it was kept, so no row is counted. (A parser's
                # message may quote the row it choked on.)
                ts.rejected = contract.mask_resident_ids_text(str(exc))
                ts.rows_in = ts.inserted = ts.updated = ts.unchanged = ts.quarantined = 0
                ts.reasons = {}
            ts.seconds = round(time.perf_counter() - t0, 3)
            ts.cpu_seconds = round(time.process_time() - c0, 3)
            if ts.rows_in != ts.stored + ts.quarantined:
                raise RuntimeError(
                    f"ingest bug: {table}: rows_in {ts.rows_in} != stored {ts.stored} + quarantined {ts.quarantined}"
                )
        summary.status = "done"
    except BaseException:
        summary.status = "failed"
        raise
    finally:
        summary.finished_at = _now()
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.execute(
            "UPDATE ingests SET finished_at = ?, status = ?, summary_json = ? WHERE ingest_id = ?",
            (summary.finished_at, summary.status, json.dumps(summary.to_dict(), ensure_ascii=False), ingest_id),
        )
        conn.commit()
        run_lock.release()
        for pragma, value in saved_pragmas.items():
            conn.execute(f"PRAGMA {pragma} = {int(value)}")
    return summary


def read_quarantine(
    db: sqlite_utils.Database, ingest_id: int | None = None, table: str | None = None, limit: int = 20
) -> dict[str, Any]:
    """Quarantined rows of one ingest (default: the latest): counts per table and reason, and sample rows."""
    conn = db.conn
    if ingest_id is None:
        row = conn.execute("SELECT max(ingest_id) FROM ingests").fetchone()
        ingest_id = row[0] if row else None
        if ingest_id is None:
            from data.errors import StateError

            raise StateError("nothing ingested yet: run `yiwang ingest DIR` first")
    meta = conn.execute("SELECT source, summary_json FROM ingests WHERE ingest_id = ?", (ingest_id,)).fetchone()
    if meta is None:
        from data.errors import NotFound

        raise NotFound(f"no ingest {ingest_id}")
    if table is not None and table not in TABLES:
        raise ContractError(f"unknown table {table!r} (one of {', '.join(contract.INGEST_ORDER)})")
    where, args = "ingest_id = ?", [ingest_id]
    if table:
        where += " AND table_name = ?"
        args.append(table)
    counts = [
        {"table": t, "reason": r, "field": f, "rows": n}
        for t, r, f, n in conn.execute(
            f"SELECT table_name, reason, field, count(*) FROM quarantine WHERE {where} "
            "GROUP BY table_name, reason, field ORDER BY table_name, count(*) DESC",
            args,
        )
    ]
    rows = [
        {"id": i, "table": t, "source_file": s, "line": ln, "field": f, "reason": r, "raw": raw}
        for i, t, s, ln, f, r, raw in conn.execute(
            f"SELECT id, table_name, source_file, line, field, reason, raw FROM quarantine WHERE {where} "
            "ORDER BY id LIMIT ?",
            [*args, limit],
        )
    ]
    summary = json.loads(meta[1]) if meta[1] else {}
    rejected = [
        {"table": t, "message": info.get("rejected")}
        for t, info in summary.get("tables", {}).items()
        if info.get("rejected") and (table is None or t == table)
    ]
    return {"ingest_id": ingest_id, "source": meta[0], "counts": counts, "rows": rows, "rejected_files": rejected}

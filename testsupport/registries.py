"""Small and large hand-made registries for the alert tests, the kill -9 script and the benchmark.

``put_rows`` loads rows the way ingest does (SQLite rows, then the Parquet snapshot batch jobs read), so tests
exercise the real store. ``population`` builds a city of any size column-wise with NumPy (1M persons in seconds)
and ``write_snapshots`` writes it straight to the snapshots for the benchmark, where going through SQLite would
only measure the loader.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from data import reference
from data.registry import (
    SNAPSHOT_SCHEMAS, delete_records, replace_rows, snapshot_path, upsert_records, write_snapshot,
)

_DEFAULTS = {
    "people": {"gender": "F", "district": "静安区", "local_hukou": 1, "ingest_id": 0},
    "enterprises": {"name": "示例企业", "industry": "I", "district": "静安区", "employees": 10, "ingest_id": 0},
    "licenses": {"ingest_id": 0},
}


def put_rows(settings, db, table: str, rows: list[dict]) -> None:
    """Upsert registry rows into SQLite and rewrite that table's snapshot (what an ingest of them would do)."""
    full = [{**_DEFAULTS[table], **r} for r in rows]
    for r in full:
        for k, v in list(r.items()):
            if isinstance(v, date):
                r[k] = v.isoformat()
    upsert_records(db.conn, table, full)
    write_snapshot(settings.home, table, db.conn)


def delete_rows(settings, db, table: str, ids: list[str]) -> None:
    delete_records(db.conn, table, ids)
    write_snapshot(settings.home, table, db.conn)


DISTRICTS = list(reference.DISTRICTS)
PERSON_LICENCES = [("resident_id_card", 20), ("passport", 10), ("hk_macau_permit", 10), ("driving_licence", 6),
                   ("residence_permit", 1), ("social_security_card", 10)]


def _ids(prefix: str, width: int, numbers):
    """Zero-padded ids like P00000042, built column-wise."""
    if isinstance(numbers, pl.Series):
        return (prefix + numbers.cast(pl.String).str.zfill(width)).alias("id")
    return pl.concat_str([pl.lit(prefix), numbers.cast(pl.String).str.zfill(width)])


def population(n_people: int, licences_per_person: float, as_of: date, seed: int = 0,
               n_enterprises: int | None = None) -> dict[str, pl.DataFrame]:
    """A synthetic city: people (households of ~3), enterprises and licences, including renewals.

    Expiry dates are spread uniformly over each licence's validity so about validity/365 of them fall in any
    year; 1 in 10 licences near expiry already has a renewal (a newer licence with a later expiry).
    """
    rng = np.random.default_rng(seed)
    n_ent = n_enterprises if n_enterprises is not None else max(1, n_people // 10)
    base = np.datetime64(as_of.isoformat(), "D")
    age_days = rng.integers(0, 90 * 365, n_people)
    people = pl.DataFrame({
        "person_id": _ids("P", 8, pl.int_range(n_people, eager=True)),
        "birth_date": (base - age_days).astype("datetime64[D]"),
        "gender": rng.choice(["M", "F"], n_people),
        "district": rng.choice(DISTRICTS, n_people),
        "local_hukou": rng.random(n_people) < 0.6,
        "household_id": _ids("H", 8, pl.int_range(n_people, eager=True) // 3),
    })
    enterprises = pl.DataFrame({
        "enterprise_id": [f"E{i:07d}" for i in range(n_ent)],
        "name": [f"企业{i}" for i in range(n_ent)],
        "industry": rng.choice(list("ABCDEFGHIJKLMNOPQRST"), n_ent),
        "district": rng.choice(DISTRICTS, n_ent),
        "founded_on": (base - rng.integers(0, 20 * 365, n_ent)).astype("datetime64[D]"),
        "employees": rng.integers(1, 500, n_ent),
    })
    n_lic = int(n_people * licences_per_person)
    kinds = rng.integers(0, len(PERSON_LICENCES), n_lic)
    validity = np.array([v for _, v in PERSON_LICENCES])[kinds] * 365
    expires = base + (rng.random(n_lic) * validity).astype("timedelta64[D]") - np.timedelta64(30, "D")
    holders = rng.integers(0, n_people, n_lic)
    lic = pl.DataFrame({
        "license_id": _ids("L", 9, pl.int_range(n_lic, eager=True)),
        "holder_id": pl.Series(holders),
        "license_type": np.array([t for t, _ in PERSON_LICENCES])[kinds],
        "issued_on": expires - validity.astype("timedelta64[D]"),
        "expires_on": expires,
    })
    lic = lic.with_columns(_ids("P", 8, pl.col("holder_id")).alias("holder_id"))
    renewed = lic.filter(
        (pl.col("expires_on") <= pl.lit(as_of) + timedelta(days=90)) & (pl.int_range(pl.len()) % 10 == 0)
    ).with_columns(
        ("R" + pl.col("license_id")).alias("license_id"),
        pl.col("expires_on").alias("issued_on"),
        (pl.col("expires_on") + timedelta(days=3650)).alias("expires_on"),
    )
    n_food = max(1, n_ent // 5)
    food = pl.DataFrame({
        "license_id": [f"F{i:08d}" for i in range(n_food)],
        "holder_id": [f"E{i:07d}" for i in range(n_food)],
        "license_type": ["food_business_licence"] * n_food,
        "expires_on": (base + rng.integers(-30, 5 * 365, n_food)).astype("datetime64[D]"),
    }).with_columns((pl.col("expires_on") - timedelta(days=5 * 365)).alias("issued_on"))
    licences = pl.concat([lic, renewed, food.select(lic.columns)], how="vertical_relaxed")
    return {"people": people, "enterprises": enterprises, "licenses": licences}


def write_snapshots(home: Path, frames: dict[str, pl.DataFrame]) -> None:
    """Write frames as the registry snapshots (typed exactly as :data:`SNAPSHOT_SCHEMAS`)."""
    for table, df in frames.items():
        schema = SNAPSHOT_SCHEMAS[table]
        out = df.select([
            (pl.col(c) if c in df.columns else pl.lit(None)).cast(t).alias(c) for c, t in schema.items()
        ])
        path = snapshot_path(home, table)
        path.parent.mkdir(parents=True, exist_ok=True)
        out.write_parquet(path)


def load_into_store(settings, db, frames: dict[str, pl.DataFrame]) -> None:
    """Load frames into SQLite (as ingest would) and rewrite the snapshots from there."""
    for table, df in frames.items():
        cols = [c for c in SNAPSHOT_SCHEMAS[table] if c in df.columns]
        out = df.select(cols).with_columns(
            [pl.col(c).cast(pl.String) for c in cols if df.schema[c] in (pl.Date, pl.Datetime)]
            + [pl.col(c).cast(pl.Int64) for c in cols if df.schema[c] == pl.Boolean]
        ).with_columns(pl.lit(0).alias("ingest_id"))
        replace_rows(db.conn, table, out)
        write_snapshot(settings.home, table, db.conn)

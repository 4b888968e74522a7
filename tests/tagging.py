"""Tags set up by hand for tests, through the taggers' store (as a batch would write them)."""

from __future__ import annotations

from datetime import date

import polars as pl

from taggers.store import TAG_SCHEMA, read_tags, replace_tags


def tag_row(subject_id: str, code: str, valid_from: date | None, *, sensitive: bool = False, as_of: date,
            dimension: str | None = None, confidence: float = 1.0, source: str = "test", evidence_zh: str = "证据",
            evidence_en: str = "evidence", valid_until: date | None = None) -> dict:
    return {"subject_id": subject_id, "code": code, "dimension": dimension or code.split(".")[0],
            "confidence": confidence, "source": source, "evidence_zh": evidence_zh, "evidence_en": evidence_en,
            "valid_from": valid_from, "valid_until": valid_until, "sensitive": bool(sensitive), "as_of": as_of}


def put_tags(db, rows: list[dict]) -> None:
    """Add (or replace, by subject and code) these tags, keeping every other tag in force."""
    new = pl.DataFrame(rows, schema=TAG_SCHEMA)
    kept = read_tags(db).join(new.select("subject_id", "code"), on=["subject_id", "code"], how="anti")
    replace_tags(db, pl.concat([kept, new]))


def drop_tags(db, subject_id: str) -> None:
    """The subject's tags gone from the batch (not deleted by the citizen: no suppression is recorded)."""
    replace_tags(db, read_tags(db).filter(pl.col("subject_id") != subject_id))

"""Citizen controls: the personalisation switch and delivery channels (PIPL Art. 24), and "not interested" dismissals.

The one owner of ``subject_preferences`` and ``dismissals``: the feed, the batch recommender, the alert engine,
the delivery and the API read and write them through these functions. A subject who never set a preference has
the defaults (personalisation on, in-app only); the switch is read at request time, so it holds from the very next
read, not the next batch.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone

import polars as pl

DEFAULT_PERSONALISATION = True
DEFAULT_CHANNELS: tuple[str, ...] = ("in_app",)


@dataclass(frozen=True)
class Preferences:
    subject_id: str
    personalisation: bool
    channels: list[str]
    updated_at: str | None  # None = never set: the defaults apply


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_preferences(conn: sqlite3.Connection, subject_id: str) -> Preferences:
    """The subject's preferences, or the defaults if never set."""
    row = conn.execute(
        "SELECT personalisation, channels, updated_at FROM subject_preferences WHERE subject_id = ?", (subject_id,)
    ).fetchone()
    if row is None:
        return Preferences(subject_id, DEFAULT_PERSONALISATION, list(DEFAULT_CHANNELS), None)
    return Preferences(subject_id, bool(row[0]), json.loads(row[1]), row[2])


def write_preferences(conn: sqlite3.Connection, subject_id: str, personalisation: bool, channels: list[str]) -> None:
    """Set the switch and channels (committed at once)."""
    with conn:
        conn.execute(
            """
            INSERT INTO subject_preferences (subject_id, personalisation, channels, updated_at)
            VALUES (?, ?, ?, ?)
            ON CONFLICT(subject_id) DO UPDATE SET
                personalisation = excluded.personalisation, channels = excluded.channels,
                updated_at = excluded.updated_at
            """,
            (subject_id, int(personalisation), json.dumps(list(channels)), _now()),
        )


def personalisation_on(conn: sqlite3.Connection, subject_id: str) -> bool:
    row = conn.execute("SELECT personalisation FROM subject_preferences WHERE subject_id = ?", (subject_id,)).fetchone()
    return DEFAULT_PERSONALISATION if row is None else bool(row[0])


def personalisation_off_subjects(conn: sqlite3.Connection) -> pl.DataFrame:
    """subject_id of every subject who switched personalisation off."""
    rows = conn.execute("SELECT subject_id FROM subject_preferences WHERE personalisation = 0").fetchall()
    return pl.DataFrame(rows, schema={"subject_id": pl.String}, orient="row")


def preferences_of(conn: sqlite3.Connection, subject_ids) -> dict[str, tuple[int, list[str]]]:
    """subject_id -> (personalisation 0/1, channels) for those of ``subject_ids`` who set preferences.

    Subjects absent from the result have the defaults (:data:`DEFAULT_PERSONALISATION`, :data:`DEFAULT_CHANNELS`).
    """
    ids = sorted(set(subject_ids))
    out: dict[str, tuple[int, list[str]]] = {}
    # In slices: SQLite caps the number of bound parameters per statement.
    for start in range(0, len(ids), 900):
        part = ids[start:start + 900]
        q = ("SELECT subject_id, personalisation, channels FROM subject_preferences "
             f"WHERE subject_id IN ({','.join('?' * len(part))})")
        out.update({sid: (pers, json.loads(chs)) for sid, pers, chs in conn.execute(q, part)})
    return out


def feed_state(conn: sqlite3.Connection, subject_id: str) -> tuple[int | None, str | None]:
    """(personalisation 0/1 or None if never set, dismissed item ids joined by U+001F or None) in one statement.

    The API's feed fast lane reads this on every request, so it is one indexed statement, not two.
    """
    return conn.execute(
        "SELECT (SELECT personalisation FROM subject_preferences WHERE subject_id = ?1),"
        " (SELECT group_concat(item_id, char(31)) FROM dismissals WHERE subject_id = ?1)",
        (subject_id,),
    ).fetchone()


def dismiss(conn: sqlite3.Connection, subject_id: str, item_id: str) -> str:
    """Record "not interested" (idempotent); returns when it was first dismissed."""
    with conn:
        conn.execute(
            "INSERT OR IGNORE INTO dismissals (subject_id, item_id, dismissed_at) VALUES (?, ?, ?)",
            (subject_id, item_id, _now()),
        )
    return conn.execute(
        "SELECT dismissed_at FROM dismissals WHERE subject_id = ? AND item_id = ?", (subject_id, item_id)
    ).fetchone()[0]


def dismissed_items(conn: sqlite3.Connection, subject_id: str) -> set[str]:
    return {r[0] for r in conn.execute("SELECT item_id FROM dismissals WHERE subject_id = ?", (subject_id,))}


def all_dismissals(conn: sqlite3.Connection) -> pl.DataFrame:
    """(subject_id, item_id) of every dismissal."""
    rows = conn.execute("SELECT subject_id, item_id FROM dismissals").fetchall()
    return pl.DataFrame(rows, schema={"subject_id": pl.String, "item_id": pl.String}, orient="row")

"""Load small hand-written cities into a real store (SQLite rows, Parquet snapshots, event log) for tests.

Goes through the same writers ingest uses (SQLite tables, :func:`data.registry.write_snapshot`,
:func:`data.eventlog.append_events`), so what the profiler reads is what it would read in production.
"""

from __future__ import annotations

from datetime import datetime, timezone

import polars as pl
import sqlite_utils

from data.eventlog import EVENT_SCHEMA, append_events
from data.registry import SNAPSHOT_SCHEMAS, write_snapshot
from data.settings import Settings

_DEFAULTS = {
    "people": {"gender": "F", "district": "静安区", "local_hukou": 1},
    "enterprises": {"name": "某公司", "industry": "I", "district": "静安区", "employees": 5},
    "licenses": {"expires_on": None},
    "catalog": {"department": "市民政局", "audience": "person", "category": "civil", "once_per_subject": 0, "local_hukou_only": 0},
}


def load_city(
    settings: Settings,
    db: sqlite_utils.Database,
    *,
    people: list[dict] = (),
    enterprises: list[dict] = (),
    licenses: list[dict] = (),
    catalog: list[dict] = (),
    events: list[dict] = (),
    ingest_id: int = 1,
) -> None:
    """Insert rows (defaults filled in) into SQLite, rewrite every snapshot, append events."""
    conn = db.conn
    for table, rows in (("people", people), ("enterprises", enterprises), ("licenses", licenses), ("catalog", catalog)):
        cols = list(SNAPSHOT_SCHEMAS[table])
        full = []
        for r in rows:
            row = {c: None for c in cols} | _DEFAULTS[table] | dict(r)
            full.append([_sql(row[c]) for c in cols] + [ingest_id])
        if full:
            with conn:
                conn.executemany(
                    f"INSERT OR REPLACE INTO {table} ({', '.join(cols)}, ingest_id) VALUES ({', '.join('?' * (len(cols) + 1))})",
                    full,
                )
        write_snapshot(settings.home, table, conn)
    if events:
        df = pl.DataFrame(
            [
                {
                    "event_id": e.get("event_id", f"e{i}"),
                    "subject_id": e["subject_id"],
                    "item_id": e["item_id"],
                    "action": e.get("action", "view"),
                    "ts": _ts(e["ts"]),
                    "channel": e.get("channel", "app"),
                }
                for i, e in enumerate(events)
            ],
            schema={k: v for k, v in EVENT_SCHEMA.items() if k != "ingest_id"},
        )
        append_events(settings.events_dir, df, ingest_id)


def _sql(value):
    if isinstance(value, bool):
        return int(value)
    return value


def _ts(value) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return datetime.fromisoformat(value).replace(tzinfo=timezone.utc)


# A small city whose every row is there for a test: see tests/test_profiler.py and tests/test_taggers.py.
SAMPLE_AS_OF = "2026-11-29"


def sample_city() -> dict[str, list[dict]]:
    return {
        "people": [
            # Household H1: parents, a newborn (their second child), a six-year-old, the father's father.
            dict(person_id="P1", birth_date="1990-01-10", gender="M", household_id="H1", marital_status="married"),
            dict(person_id="P2", birth_date="1992-04-05", gender="F", household_id="H1", marital_status="married", occupation="teacher"),
            dict(person_id="P3", birth_date="2026-03-01", gender="F", household_id="H1"),
            dict(person_id="P4", birth_date="2020-05-10", gender="M", household_id="H1"),
            dict(person_id="P5", birth_date="1966-08-01", gender="M", household_id="H1", marital_status="widowed"),
            # A woman who turned 55 this year, on hardship support, disabled, without local hukou.
            dict(person_id="P6", birth_date="1971-02-01", gender="F", household_id="H2", low_income=1, disability=1, local_hukou=0),
            # Newly married, and married long ago.
            dict(person_id="P7", birth_date="1995-06-01", gender="F", household_id="H3", marital_status="married"),
            dict(person_id="P8", birth_date="1993-06-01", gender="M", household_id="H4", marital_status="married"),
            # A job seeker and a one-off visitor.
            dict(person_id="P9", birth_date="2003-09-09", gender="M", household_id="H5"),
            dict(person_id="P10", birth_date="1985-12-12", gender="F", household_id="H6"),
            # Disabled by certificate only.
            dict(person_id="P11", birth_date="1980-01-01", gender="M", household_id="H7"),
            # Turned 50 this year but still has a registered occupation: a cadre, who retires at 55.
            dict(person_id="P12", birth_date="1976-06-01", gender="F", household_id="H8", occupation="office_worker"),
        ],
        "enterprises": [
            dict(enterprise_id="E1", name="新开科技", industry="I", founded_on="2026-03-01", employees=5, legal_rep_id="P10"),
            dict(enterprise_id="E2", name="老字号餐馆", industry="H", founded_on="2015-04-01", employees=150),
            dict(enterprise_id="E3", name="软件公司", industry="I", founded_on="2018-07-01", employees=50),
            dict(enterprise_id="E4", name="大型研究院", industry="M", founded_on="2018-07-01", employees=2500),
        ],
        "licenses": [
            dict(license_id="L1", holder_id="P7", license_type="marriage_certificate", issued_on="2026-10-01"),
            dict(license_id="L2", holder_id="P8", license_type="marriage_certificate", issued_on="2025-01-01"),
            dict(license_id="L3", holder_id="P11", license_type="disability_certificate", issued_on="2024-01-01", expires_on="2034-01-01"),
            dict(license_id="L4", holder_id="E4", license_type="high_tech_certificate", issued_on="2025-01-01", expires_on="2028-01-01"),
            dict(license_id="L5", holder_id="P1", license_type="hk_macau_permit", issued_on="2017-01-15", expires_on="2027-01-15"),
            # A food business licence that lapsed still says the firm sells food.
            dict(license_id="L7", holder_id="E2", license_type="food_business_licence", issued_on="2020-04-01", expires_on="2025-04-01"),
            # Issued after as_of: must not count yet.
            dict(license_id="L6", holder_id="P9", license_type="marriage_certificate", issued_on="2026-12-20"),
        ],
        "catalog": [
            dict(item_id="JOB1", name="失业登记", department="市人社局", category="就业", life_events="life_event.job_seeking"),
            dict(item_id="JOB2", name="求职补贴", department="市人社局", category="就业", life_events="life_event.job_seeking|life_event.graduation"),
            dict(item_id="HOME1", name="购房资格", department="市房管局", category="住房", life_events="life_event.home_purchase"),
            dict(item_id="RET1", name="职工退休审批", department="市人社局", category="养老保险", life_events="life_event.retirement"),
            dict(item_id="AR1", name="企业年度报告公示", department="市市场监管局", audience="enterprise", category="信用监管", crowds="enterprise.annual_report_due"),
            dict(item_id="EDU1", name="教师资格认定", department="市教委", category="教育", occupations="occupation.teacher"),
        ],
        "events": [
            dict(subject_id="P9", item_id="JOB1", action="view", ts="2026-11-01T02:00:00"),
            dict(subject_id="P9", item_id="JOB2", action="apply", ts="2026-11-20T02:00:00"),
            dict(subject_id="P9", item_id="JOB1", action="view", ts="2026-11-28T02:00:00"),
            dict(subject_id="P10", item_id="JOB1", action="view", ts="2026-11-25T02:00:00"),
            dict(subject_id="P10", item_id="HOME1", action="view", ts="2026-01-01T02:00:00"),
            dict(subject_id="P2", item_id="EDU1", action="apply", ts="2026-11-27T02:00:00"),
            # P6 applied for retirement when she turned 55; P12 turned 50 and only looked.
            dict(subject_id="P6", item_id="RET1", action="view", ts="2026-02-09T02:00:00"),
            dict(subject_id="P6", item_id="RET1", action="apply", ts="2026-02-10T02:00:00"),
            dict(subject_id="P12", item_id="RET1", action="view", ts="2026-06-10T02:00:00"),
            # E3 files its annual report in February 2027 (in the future for SAMPLE_AS_OF).
            dict(subject_id="E3", item_id="AR1", action="apply", ts="2027-02-01T02:00:00"),
            # An id no registry holds: a behaviour-only profile.
            dict(subject_id="P999", item_id="JOB1", action="view", ts="2026-11-10T02:00:00"),
            dict(subject_id="P999", item_id="JOB2", action="apply", ts="2026-11-11T02:00:00"),
            # 2026-11-29 20:00 UTC is already 30 Nov in Shanghai: after as_of, ignored.
            dict(subject_id="P10", item_id="JOB2", action="view", ts="2026-11-29T20:00:00"),
        ],
    }

"""The demo: the whole story on a synthetic city, ending with sample feeds and alerts a person can read."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import polars as pl
import sqlite_utils
from rich.panel import Panel
from rich.table import Table

from yiwang.pipeline import RunSummary, StageResult, run_nightly, summary_dict
from yiwang.stages import INGEST
from data.registry import scan_table
from data.settings import Settings


@dataclass
class DemoResult:
    run: RunSummary
    samples: list[Any] = field(default_factory=list)


def _timed(name: str, fn, on_stage) -> StageResult:
    import time

    t0 = time.perf_counter()
    out = fn()
    res = StageResult(name, "ok", time.perf_counter() - t0, summary_dict(out))
    if on_stage:
        on_stage(res)
    return res


def run_demo(
    settings: Settings,
    db: sqlite_utils.Database,
    as_of: date,
    people: int,
    enterprises: int,
    seed: int,
    progress=None,
    on_stage=None,
) -> DemoResult:
    from data.synth import generate_city

    city = settings.home / "demo-city"
    if city.exists():
        shutil.rmtree(city)
    synth = _timed("synth", lambda: generate_city(city, people, enterprises, seed, as_of, progress=progress), on_stage)
    ingest = _timed("ingest", lambda: INGEST(settings, db, as_of, progress=progress, export_dir=city / "export"), on_stage)
    run = run_nightly(settings, db, as_of, train="always", progress=progress, on_stage=on_stage)
    run.stages[:0] = [synth, ingest]
    return DemoResult(run=run, samples=_samples(settings, db, as_of) if run.ok else [])


def _pick_subjects(settings: Settings, as_of: date) -> list[tuple[str, str]]:
    """A resident with an HK/Macau permit expiring within 30 days, a newly-wed, an enterprise."""
    picks: list[tuple[str, str]] = []
    lic = scan_table(settings.home, "licenses")
    expiring = (
        lic.filter(
            (pl.col("license_type") == "hk_macau_permit")
            & pl.col("expires_on").is_between(as_of, as_of + timedelta(days=30))
        )
        .sort("expires_on", "holder_id")
        .select("holder_id")
        .head(1)
        .collect()
    )
    if expiring.height:
        picks.append(("resident whose HK/Macau permit expires within 30 days", expiring.item()))
    wed = (
        lic.filter((pl.col("license_type") == "marriage_certificate") & (pl.col("issued_on") >= as_of - timedelta(days=90)))
        .sort("issued_on", "holder_id", descending=[True, False])
        .select("holder_id")
        .head(1)
        .collect()
    )
    if wed.height:
        picks.append(("resident married in the last 90 days", wed.item()))
    ent = scan_table(settings.home, "enterprises").sort("founded_on", descending=True).select("enterprise_id").head(1).collect()
    if ent.height:
        picks.append(("the newest enterprise", ent.item()))
    return picks


def _samples(settings: Settings, db: sqlite_utils.Database, as_of: date) -> list[Any]:
    from notifier.outbox import list_alerts
    from recommender.feeds import read_feed

    blocks: list[Any] = []
    for label, subject_id in _pick_subjects(settings, as_of):
        feed = read_feed(db, settings, subject_id, limit=5)
        table = Table(title=f"个性推荐 for {subject_id} ({label})", show_lines=False)
        for col in ("#", "item", "reason"):
            table.add_column(col)
        for entry in feed.items:
            reason = entry.reasons[0]["zh"] if entry.reasons else ""
            table.add_row(str(entry.rank), entry.name, reason)
        blocks.append(table)
        alerts = list_alerts(db, subject_id)
        if alerts:
            lines = "\n".join(f"{a['message_zh']}" for a in alerts[:5])
            blocks.append(Panel(lines, title=f"提醒 alerts for {subject_id}"))
    return blocks

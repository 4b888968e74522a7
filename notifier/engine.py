"""Alert evaluation: rules in force x registries (+ tags) -> rows in the outbox, each alert exactly once.

Every rule becomes a Polars query (its trigger kind's ``query``, notifier/kinds/) over the registry snapshots that
yields candidate alerts keyed by (rule, subject, object, stage); the engine never names a kind. The outbox's UNIQUE
key on those four columns and INSERT OR IGNORE make reruns, crashes and overlapping runs harmless: a candidate
either is already there or is added once. All writes of a run happen in one transaction, so a run killed half-way
leaves the outbox as it was.

Catch-up: only the latest due stage of a ladder is a candidate (7 days left gives the 7-day notice, never the 90),
and a pending earlier stage of the same object is superseded. Cancellation: an alert not yet delivered whose cause
is gone (licence renewed, tag deleted, window closed, subject left the audience) is cancelled; a delivered one is
marked resolved so the portal stops showing it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

import polars as pl

from notifier.rules import Rule, RuleSet, check_file, mark_in_force, rules_in_force
from data.citizen import personalisation_off_subjects
from data.reference import (
    CATALOG_FILE, ITEM_NAMES_EN_FILE, LICENSE_TYPES_FILE, TAXONOMY_FILE, read_reference_table,
)
from data.registry import scan_table

OUT_COLUMNS = [
    "rule_id", "rule_version", "kind", "subject_id", "subject_type", "object_id", "stage", "stage_order",
    "cause_date", "item_ids", "message_zh", "message_en", "fields_json", "channels", "priority", "statutory",
]
# A licence alert stays current until the licence is renewed or this long after it expired; then it is resolved.
LICENCE_HORIZON_DAYS = 365


@dataclass
class RuleResult:
    rule_id: str
    candidates: int = 0
    created: int = 0
    cancelled: int = 0
    resolved: int = 0
    superseded: int = 0


@dataclass
class AlertSummary:
    """What one evaluation did (printed by `yiwang alerts`)."""

    as_of: str
    rules_source: str
    rules_warning: str | None
    rules: int
    candidates: int = 0
    created: int = 0
    already_present: int = 0
    superseded: int = 0
    cancelled: int = 0
    resolved: int = 0
    seconds: float = 0.0
    query_seconds: float = 0.0  # the Polars part: reading registries, computing candidates and live causes
    write_seconds: float = 0.0  # the SQLite part: one transaction of inserts, supersessions, cancellations
    per_rule: list[RuleResult] = field(default_factory=list)


@dataclass
class DryRun:
    """What a rule would do on a date, sending and writing nothing."""

    rule_id: str
    as_of: str
    subjects: int
    candidates: int
    new: int
    sample: list[dict]


# -- inputs -----------------------------------------------------------------------------------------------------


class Inputs:
    """Lazy inputs shared by all rules of one run (each read at most once)."""

    def __init__(self, settings, db, as_of: date):
        self.settings, self.db, self.as_of = settings, db, as_of
        self.home = Path(settings.home)
        self._tags: dict[frozenset, pl.LazyFrame] = {}
        self._cache: dict[str, object] = {}
        self.licence_types: set[str] = set()
        self.licence_max_stage = 0

    def table(self, name: str) -> pl.LazyFrame:
        return scan_table(self.home, name)

    @property
    def catalog(self) -> pl.DataFrame:
        if "catalog" not in self._cache:
            cat = self.table("catalog").select("item_id", "name", "department", "renews_license").collect()
            if cat.height == 0:
                # Before the first ingest the reference catalogue is the catalogue.
                ref = read_reference_table(self.settings.data_dir, CATALOG_FILE)
                if ref is not None:
                    cat = ref.select("item_id", "name", "department", "renews_license")
            self._cache["catalog"] = cat
        return self._cache["catalog"]

    @property
    def district_codes(self) -> pl.DataFrame:
        """district name -> GB/T 2260 code, read off the district-run catalogue items (SH310101-...)."""
        if "districts" not in self._cache:
            self._cache["districts"] = (
                self.catalog.lazy()
                .filter(pl.col("item_id").str.contains(r"^SH\d{6}-"))
                .select(
                    pl.col("department").str.extract(r"^(.+?区)").alias("district"),
                    pl.col("item_id").str.extract(r"^SH(\d{6})-").alias("district_code"),
                )
                .drop_nulls()
                .unique(subset="district", keep="first")
                .collect()
            )
        return self._cache["districts"]

    @property
    def licence_names(self) -> pl.DataFrame:
        if "lic_names" not in self._cache:
            df = read_reference_table(self.settings.data_dir, LICENSE_TYPES_FILE)
            if df is not None:
                df = df.select(
                    "license_type", pl.col("name_zh").alias("licence_name_zh"), pl.col("name_en").alias("licence_name_en")
                )
            else:
                df = pl.DataFrame(schema={"license_type": pl.String, "licence_name_zh": pl.String,
                                          "licence_name_en": pl.String})
            self._cache["lic_names"] = df
        return self._cache["lic_names"]

    @property
    def item_names_en(self) -> pl.DataFrame:
        """item_id -> English name (``data/item_names_en.csv``): the catalogue's names are Chinese only."""
        if "item_names_en" not in self._cache:
            df = read_reference_table(self.settings.data_dir, ITEM_NAMES_EN_FILE)
            if df is not None:
                df = df.select("item_id", "name_en")
            else:
                df = pl.DataFrame(schema={"item_id": pl.String, "name_en": pl.String})
            self._cache["item_names_en"] = df
        return self._cache["item_names_en"]

    @property
    def tag_names(self) -> pl.DataFrame:
        if "tag_names" not in self._cache:
            df = read_reference_table(self.settings.data_dir, TAXONOMY_FILE)
            if df is not None:
                df = df.select(
                    pl.col("code").alias("tag_code"), pl.col("name_zh").alias("tag_name_zh"),
                    pl.col("name_en").alias("tag_name_en"),
                )
            else:
                df = pl.DataFrame(schema={"tag_code": pl.String, "tag_name_zh": pl.String, "tag_name_en": pl.String})
            self._cache["tag_names"] = df
        return self._cache["tag_names"]

    def tags(self, codes: set[str]) -> pl.LazyFrame:
        """Tags in force with the given codes: subject_id, code, valid_from (Date)."""
        key = frozenset(codes)
        if key not in self._tags:
            from taggers import tags_in_force

            self._tags[key] = (
                tags_in_force(self.settings, self.db, codes=sorted(codes))
                .select("subject_id", "code", "valid_from").lazy()
            )
        return self._tags[key]

    @property
    def personalisation_off(self) -> pl.LazyFrame:
        if "prefs_off" not in self._cache:
            self._cache["prefs_off"] = personalisation_off_subjects(self.db.conn)
        return self._cache["prefs_off"].lazy()

    def subjects(self, subject_type: str) -> pl.LazyFrame:
        """subject_id, district (+ birth_date/household_id for persons, founded_on for enterprises).

        Read once per run and kept in memory: every rule joins against it, and decoding the snapshot once per
        rule cost more than all the joins together at 1M persons.
        """
        key = f"subjects:{subject_type}"
        if key not in self._cache:
            if subject_type == "person":
                lf = self.table("people").select(
                    pl.col("person_id").alias("subject_id"), "district", "birth_date", "household_id"
                )
            else:
                lf = self.table("enterprises").select(
                    pl.col("enterprise_id").alias("subject_id"), "district", "founded_on"
                )
            self._cache[key] = lf.collect()
        return self._cache[key].lazy()

    def current_licences(self, types: set[str]) -> pl.LazyFrame:
        """Licences of ``types`` that are not renewed (the holder has none of the same type expiring later),
        expiring within the longest ladder step and expired at most :data:`LICENCE_HORIZON_DAYS` ago, with the
        holder's type and district. A licence outside that window cannot be due, and an alert about it is no
        longer current (its expiry moved, or it lapsed long ago).

        Computed once for all licence rules. Only licences near their expiry can be due or keep an alert
        current, so the renewal check runs on those alone against a per-(holder, type) latest expiry: a window
        function over all ~3M licences cost four times as much.
        """
        if "licences" not in self._cache:
            base = (
                self.table("licenses")
                .filter(pl.col("license_type").is_in(sorted(types)) & pl.col("expires_on").is_not_null())
                .select(pl.col("holder_id").alias("subject_id"), "license_id", "license_type", "expires_on")
            )
            window = base.filter(pl.col("expires_on").is_between(
                pl.lit(self.as_of) - pl.duration(days=LICENCE_HORIZON_DAYS),
                pl.lit(self.as_of) + pl.duration(days=self.licence_max_stage),
            ))
            # Latest expiry per (holder, type), only for the pairs that have a licence in the window.
            latest = (
                base.join(window.select("subject_id", "license_type").unique(), on=["subject_id", "license_type"],
                          how="semi")
                .group_by("subject_id", "license_type")
                .agg(pl.col("expires_on").max().alias("_latest"))
            )
            holders = pl.concat([
                self.subjects("person").select("subject_id", "district", pl.lit("person").alias("holder_type")),
                self.subjects("enterprise").select("subject_id", "district", pl.lit("enterprise").alias("holder_type")),
            ])
            self._cache["licences"] = (
                window.join(latest, on=["subject_id", "license_type"], how="inner")
                .filter(pl.col("expires_on") >= pl.col("_latest"))
                .drop("_latest")
                .join(holders, on="subject_id", how="inner")
                .collect()
            )
        return self._cache["licences"].lazy()


def candidates(settings, db, as_of: date, rules: list[Rule]) -> list[tuple[Rule, pl.DataFrame, pl.DataFrame]]:
    """Per enabled rule: (rule, due candidates, live cause keys), all queries collected together."""
    inp = Inputs(settings, db, as_of)
    for kind in dict.fromkeys(type(r) for r in rules):
        kind.prepare(inp, [r for r in rules if type(r) is kind])
    plans: list[pl.LazyFrame] = []
    for rule in rules:
        due, live = rule.query(inp)
        # Keys are unique by construction (registry primary keys); the outbox's UNIQUE key backs that up.
        plans.append(due)
        plans.append(live)  # only ever anti-joined against: duplicates are harmless, deduplicating is not free
    # One plan at a time: collect_all over all rules was twice as slow on 2 cores (memory-bound, many joins).
    frames = [plan.collect() for plan in plans]
    return [(rule, frames[2 * i], frames[2 * i + 1]) for i, rule in enumerate(rules)]


# -- writing the outbox -----------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def evaluate_alerts(settings, db, as_of: date, rule_ids: list[str] | None = None) -> AlertSummary:
    """Evaluate the rules in force on ``as_of`` into the outbox (exactly once per key); cancel stale alerts."""
    t0 = time.perf_counter()
    ruleset = rules_in_force(settings, db)
    rules = _select(ruleset, rule_ids)
    enabled = [r for r in rules if r.enabled]
    t1 = time.perf_counter()
    results = candidates(settings, db, as_of, enabled)
    summary = AlertSummary(as_of.isoformat(), ruleset.source, ruleset.warning, len(enabled))
    summary.query_seconds = round(time.perf_counter() - t1, 3)
    t2 = time.perf_counter()
    now = _now()
    conn = db.conn
    # The outbox's indexes take random inserts; SQLite's default 2 MB page cache made a 200k-alert run
    # spill and re-read index pages. This connection's cache only, for its lifetime.
    conn.execute("PRAGMA cache_size = -262144")
    # The whole write happens under one write lock: what we read of the outbox is what we change, and a run
    # killed at any point leaves the outbox exactly as it was.
    conn.execute("BEGIN IMMEDIATE")
    try:
        existing = _outbox_keys(conn, [r.id for r in enabled])
        for rule, due, live in results:
            rr = RuleResult(rule.id, candidates=due.height)
            mine = existing.filter(pl.col("rule_id") == rule.id)
            new = due.join(mine.select("subject_id", "object_id", "stage"), on=["subject_id", "object_id", "stage"],
                           how="anti")
            if new.height:
                before = conn.total_changes
                # OR IGNORE keeps the UNIQUE key the last word on duplicates, whatever the read above saw.
                rows = new.select(
                    *OUT_COLUMNS, pl.lit(as_of.isoformat()).alias("due_on"), pl.lit(now).alias("created_at"),
                    pl.lit(now).alias("updated_at"),
                ).rows()  # tuples built in Rust: a Python generator over 200k rows cost seconds
                conn.executemany(
                    f"INSERT OR IGNORE INTO outbox ({', '.join(OUT_COLUMNS)}, due_on, created_at, updated_at, status)"
                    f" VALUES ({', '.join('?' * (len(OUT_COLUMNS) + 3))}, 'pending')",
                    rows,
                )
                rr.created = conn.total_changes - before
                # Only objects with an undelivered earlier stage can have something to supersede.
                waiting = mine.filter(pl.col("status") == "pending").select("subject_id", "object_id").unique()
                later = new.filter(pl.col("stage_order") > 0).join(waiting, on=["subject_id", "object_id"], how="semi")
                if later.height:
                    before = conn.total_changes
                    conn.executemany(
                        "UPDATE outbox SET status='superseded', status_reason='a later stage is due', updated_at=?"
                        " WHERE rule_id=? AND subject_id=? AND object_id=? AND stage_order < ? AND status='pending'",
                        ((now, rule.id, *row) for row in later.select("subject_id", "object_id", "stage_order").iter_rows()),
                    )
                    rr.superseded = conn.total_changes - before
            rr.cancelled, rr.resolved = _cancel_gone(conn, mine, live, now)
            summary.per_rule.append(rr)
        # A disabled rule sends nothing more: its undelivered alerts are cancelled.
        for rule in rules:
            if not rule.enabled:
                n = conn.execute(
                    "UPDATE outbox SET status='cancelled', status_reason='rule disabled', updated_at=?"
                    " WHERE rule_id=? AND status='pending'",
                    (now, rule.id),
                ).rowcount
                summary.per_rule.append(RuleResult(rule.id, cancelled=n))
        summary.per_rule.extend(_cancel_not_in_force(conn, ruleset, now))
        _cancel_open_deliveries(conn)
        mark_in_force(settings, conn, ruleset, by="alerts")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    for rr in summary.per_rule:
        summary.candidates += rr.candidates
        summary.created += rr.created
        summary.superseded += rr.superseded
        summary.cancelled += rr.cancelled
        summary.resolved += rr.resolved
    summary.already_present = summary.candidates - summary.created
    summary.write_seconds = round(time.perf_counter() - t2, 3)
    summary.seconds = round(time.perf_counter() - t0, 3)
    return summary


def _select(ruleset: RuleSet, rule_ids: list[str] | None) -> list[Rule]:
    if not rule_ids:
        return list(ruleset.rules)
    return [ruleset.get(rid) for rid in rule_ids]


_KEY_SCHEMA = {"alert_id": pl.Int64, "rule_id": pl.String, "subject_id": pl.String, "object_id": pl.String,
               "stage": pl.String, "status": pl.String}


def _outbox_keys(conn, rule_ids: list[str]) -> pl.DataFrame:
    if not rule_ids:
        return pl.DataFrame(schema=_KEY_SCHEMA)
    marks = ",".join("?" * len(rule_ids))
    rows = conn.execute(
        f"SELECT alert_id, rule_id, subject_id, object_id, stage, status FROM outbox WHERE rule_id IN ({marks})",
        rule_ids,
    ).fetchall()
    return pl.DataFrame(rows, schema=_KEY_SCHEMA, orient="row")


def _cancel_gone(conn, mine: pl.DataFrame, live: pl.DataFrame, now: str) -> tuple[int, int]:
    open_ = mine.filter(pl.col("status").is_in(["pending", "delivered"]))
    if open_.height == 0:
        return 0, 0
    gone = open_.join(live, on=["subject_id", "object_id"], how="anti")
    pending = gone.filter(pl.col("status") == "pending")["alert_id"].to_list()
    delivered = gone.filter(pl.col("status") == "delivered")["alert_id"].to_list()
    before = conn.total_changes
    conn.executemany(
        "UPDATE outbox SET status='cancelled', status_reason='cause gone', updated_at=?"
        " WHERE alert_id=? AND status='pending'",
        [(now, a) for a in pending],
    )
    cancelled = conn.total_changes - before
    before = conn.total_changes
    conn.executemany(
        "UPDATE outbox SET status='resolved', status_reason='cause gone', updated_at=?"
        " WHERE alert_id=? AND status='delivered'",
        [(now, a) for a in delivered],
    )
    return cancelled, conn.total_changes - before


def _cancel_not_in_force(conn, ruleset: RuleSet, now: str) -> list[RuleResult]:
    """Pending alerts of a rule that is not in the rules in force (removed, or never really in force) never go out."""
    ids = [r.id for r in ruleset.rules]
    marks = ",".join("?" * len(ids))
    where = f"status = 'pending' AND rule_id NOT IN ({marks})" if ids else "status = 'pending'"
    counts = conn.execute(f"SELECT rule_id, COUNT(*) FROM outbox WHERE {where} GROUP BY rule_id", ids).fetchall()
    if counts:
        conn.execute(
            f"UPDATE outbox SET status='cancelled', status_reason='rule not in force', updated_at=? WHERE {where}",
            [now, *ids],
        )
    return [RuleResult(rule_id, cancelled=n) for rule_id, n in counts]


def _cancel_open_deliveries(conn) -> None:
    conn.execute(
        """UPDATE deliveries SET status='cancelled', last_error=COALESCE(last_error, 'alert withdrawn')
           WHERE status='pending' AND alert_id IN (
             SELECT alert_id FROM outbox WHERE status IN ('cancelled','superseded','resolved'))"""
    )


def dry_run(settings, db, rule_id: str, as_of: date, sample: int = 5, rules_file: Path | None = None) -> DryRun:
    """How many subjects ``rule_id`` would alert on ``as_of`` and a sample; writes nothing.

    The rule comes from the rules in force, or from ``rules_file`` (a draft), which is only read.
    """
    if rules_file is not None:
        rule = RuleSet(check_file(rules_file, settings.data_dir), str(rules_file), "", "").get(rule_id)
    else:
        rule = rules_in_force(settings, db).get(rule_id)
    [(rule, due, _live)] = candidates(settings, db, as_of, [rule])
    rows = db.conn.execute(
        "SELECT subject_id, object_id, stage FROM outbox WHERE rule_id=?", (rule_id,)
    ).fetchall()
    existing = pl.DataFrame(
        rows, schema={"subject_id": pl.String, "object_id": pl.String, "stage": pl.String}, orient="row"
    )
    new = due.join(existing, on=["subject_id", "object_id", "stage"], how="anti")
    picked = due.head(sample).select("subject_id", "object_id", "stage", "item_ids", "message_zh", "message_en")
    return DryRun(
        rule_id=rule_id,
        as_of=as_of.isoformat(),
        subjects=due["subject_id"].n_unique(),
        candidates=due.height,
        new=new.height,
        sample=picked.to_dicts(),
    )


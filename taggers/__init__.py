"""Batch taggers: life-event, crowd, occupation and enterprise tags, rule-based and learned.

:func:`run_taggers` reads the published profiles (``yiwang profile`` must have run for the same as-of date),
checks the operators' rules file (:mod:`taggers.rules`; a bad file changes nothing), adds the licence and event
aggregates the rules ask for in one pass each, evaluates every rule in one ``with_columns``, adds the tags of
every registered learned tagger (:mod:`taggers.base`; today the occupation model, :mod:`taggers.occupation`),
drops expired tags, and replaces the tags in one transaction that also drops what citizens deleted
(:mod:`taggers.store`).

``progress``, where accepted, is a callable ``progress(stage: str, done: int, total: int)``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Callable

import polars as pl
import sqlite_utils

from profiler import StageClock, scan_profiles
from profiler.build import events_until, lazy
from taggers import store
# The learned-tagger contract is part of the package's API; importing taggers.occupation registers its model.
from taggers.base import LEARNED_TAGGERS, TAG_ROW_SCHEMA, LearnedTagger, make_tagger, register_tagger  # noqa: F401
from taggers.occupation import MODEL_NAME, occupation_event_aggregates
from taggers.rules import (
    Compiler,
    RuleSet,
    event_aggregate_exprs,
    item_flag_exprs,
    licence_aggregates,
    load_rules,
    field_kind,
)
from data.errors import StateError
from data.eventlog import EVENT_SCHEMA, scan_events
from data.registry import SNAPSHOT_SCHEMAS, scan_table
from data.settings import Settings

# What another engine may import from this one (tests/test_layering.py holds every engine to it): these modules,
# and in them the names that do not start with "_". The rest is this engine's own and may change without notice.
PUBLIC_MODULES = ("taggers", "taggers.store")

Progress = Callable[[str, int, int], None]
TAG_STAGES = ("rules file", "aggregates", "rules", "occupation model", "write")
TAGGING_LISTS = ("household_members", "license_types")  # the non-scalar profile columns rules and model read


@dataclass
class TagSummary:
    as_of: str
    rules: int
    rules_digest: str
    tags_written: int
    suppressed: int
    expired: int
    by_dimension: dict[str, int] = field(default_factory=dict)
    occupation_model: str | None = None
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    stage_cpu_seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def rules_path(settings: Settings) -> Path:
    return Path(settings.tag_rules_file) if settings.tag_rules_file else Path(settings.data_dir) / "tag_rules.yaml"


def tags_parquet_path(settings: Settings) -> Path:
    return Path(settings.home) / "tags" / "tags.parquet"


def load_taxonomy(data_dir: Path) -> pl.DataFrame:
    from data.reference import load_taxonomy as _load

    return _load(data_dir)


def license_types(data_dir: Path) -> set[str]:
    from data.reference import load_license_types

    return set(load_license_types(data_dir)["license_type"].to_list())


def rule_fields(profile_schema: pl.Schema | dict) -> dict[str, str]:
    """The fields a rule may name: the profile's scalar columns, by kind."""
    kinds = {name: field_kind(dtype) for name, dtype in profile_schema.items()}
    return {k: v for k, v in kinds.items() if v in {"num", "str", "bool", "date"}}


def check_rules(settings: Settings, path: Path | None = None) -> RuleSet:
    """Check a rules file against the taxonomy, licence types and profile fields without tagging anyone."""
    from profiler.build import profile_frame

    # The fields come from the profile's schema, which empty typed inputs give without reading any data.
    empty = {t: pl.LazyFrame(schema=SNAPSHOT_SCHEMAS[t]) for t in ("people", "enterprises", "licenses", "catalog")}
    schema = profile_frame(
        empty["people"], empty["enterprises"], empty["licenses"], pl.LazyFrame(schema=EVENT_SCHEMA), empty["catalog"], date.today()
    ).collect_schema()
    return load_rules(path or rules_path(settings), rule_fields(schema), load_taxonomy(settings.data_dir), license_types(settings.data_dir))


def tagging_frame(
    profiles: pl.LazyFrame | pl.DataFrame,
    licenses: pl.LazyFrame | pl.DataFrame,
    events: pl.LazyFrame | pl.DataFrame,
    catalog: pl.LazyFrame | pl.DataFrame,
    ruleset: RuleSet,
    as_of: date,
    extra_event_aggregates=(),
) -> pl.LazyFrame:
    """Profiles plus the licence and event aggregates the rules (and the model) need: one pass over each source."""
    frame = lazy(profiles)
    # Rules read scalar fields and the household members, the model the licence types; the behaviour
    # breakdowns and other nested columns (half of a profile) are never read, so never loaded.
    schema = frame.collect_schema()
    frame = frame.select([c for c, k in rule_fields(schema).items()] + [c for c in TAGGING_LISTS if c in schema])
    lic_aggs = [a for a in ruleset.aggregates.values() if a.kind == "license"]
    lic = licence_aggregates(lazy(licenses), lic_aggs, as_of)
    if lic is not None:
        frame = frame.join(lic, on="subject_id", how="left")
    ev_aggs = [a for a in ruleset.aggregates.values() if a.kind == "events"] + list(extra_event_aggregates)
    if ev_aggs:
        flags = item_flag_exprs(ev_aggs)
        items = lazy(catalog).select("item_id", *flags).filter(pl.any_horizontal(pl.exclude("item_id")))
        ev = (
            events_until(events, as_of)
            .select("subject_id", "item_id", "action", "ts")
            .join(items, on="item_id", how="inner")
            .group_by("subject_id")
            .agg(event_aggregate_exprs(ev_aggs, as_of))
        )
        frame = frame.join(ev, on="subject_id", how="left")
    return frame


def rule_tags(frame: pl.LazyFrame | pl.DataFrame, ruleset: RuleSet, as_of: date) -> pl.LazyFrame:
    """Every rule's tags (before taxonomy, expiry and suppression), from a tagging frame."""
    comp = Compiler(ruleset, as_of)
    named = comp.named_columns()
    staged = lazy(frame)
    if named:
        staged = staged.with_columns(named)
    # Every rule's condition in one pass; the rows are then cut per rule from the materialised result.
    evaluated = staged.with_columns(comp.rule_columns())
    parts = [comp.tag_rows(evaluated, r) for r in ruleset.rules]
    if not parts:
        return pl.LazyFrame(schema={k: v for k, v in store.TAG_SCHEMA.items() if k not in ("dimension", "sensitive", "as_of")})
    return pl.concat(parts, how="vertical_relaxed")


def finalise(raw: pl.LazyFrame | pl.DataFrame, taxonomy: pl.DataFrame, as_of: date) -> tuple[pl.DataFrame, int]:
    """Known codes only, one tag per (subject, code) (highest confidence wins), expired ones dropped.

    Returns (tags, number expired).
    """
    tax = taxonomy.lazy().select(
        "code",
        "dimension",
        (pl.col("sensitive").cast(pl.Int64) != 0).alias("sensitive"),
    )
    known = (
        lazy(raw)
        .join(tax, on="code", how="inner")
        .sort(["subject_id", "code", "confidence", "valid_from"], descending=[False, False, True, True])
        .unique(subset=["subject_id", "code"], keep="first", maintain_order=True)
        .with_columns(pl.lit(as_of).alias("as_of"))
    )
    live = (pl.col("valid_from") <= pl.lit(as_of)) & (pl.col("valid_until").is_null() | (pl.col("valid_until") >= pl.lit(as_of)))
    out = known.with_columns(live.alias("_live")).collect()
    expired = out.filter(~pl.col("_live")).height
    return out.filter(pl.col("_live")).select(list(store.TAG_COLUMNS)), expired


def learned_taggers(settings: Settings) -> list[LearnedTagger]:
    """A fresh instance of every registered learned tagger, as the nightly batch runs them."""
    return [cls.from_settings(settings) for cls in LEARNED_TAGGERS.values()]


def run_taggers(settings: Settings, db: sqlite_utils.Database, as_of: date, progress: Progress | None = None) -> TagSummary:
    """Tag every subject at ``as_of`` from the published profiles and replace the stored tags in one transaction."""
    t0 = datetime.now()
    tick = StageClock(progress, TAG_STAGES)

    tick("rules file")
    profiles = scan_profiles(settings)
    batch_as_of = profiles.select(pl.col("as_of").first()).collect().item()
    if batch_as_of is not None and batch_as_of != as_of:
        raise StateError(f"the published profiles are as of {batch_as_of}: run `yiwang profile --as-of {as_of}` first")
    taxonomy = load_taxonomy(settings.data_dir)
    ruleset = load_rules(rules_path(settings), rule_fields(profiles.collect_schema()), taxonomy, license_types(settings.data_dir))
    writer = store.TagBatchWriter(db, tags_parquet_path(settings))
    try:
        tagged = compute_tags(settings, profiles, ruleset, taxonomy, as_of, tick, writer)
        return write_tags(db, tagged, writer, t0, tick)
    except BaseException:
        writer.abort()
        raise


@dataclass
class _Tagged:
    """A tag batch computed but not yet written."""

    tags: pl.DataFrame
    expired: int
    ruleset: RuleSet
    as_of: date
    model_version: str | None


def compute_tags(settings: Settings, profiles: pl.LazyFrame, ruleset: RuleSet, taxonomy: pl.DataFrame, as_of: date,
                 tick: StageClock, writer: store.TagBatchWriter) -> _Tagged:
    """Every tag at ``as_of`` from the profiles (published or just computed), handed to ``writer`` in two parts:
    the rule tags the model cannot also give, as soon as they are known (the writer stores them while the
    model trains and predicts), then the learned taggers' tags."""
    tick("aggregates")
    learned = learned_taggers(settings)
    frame = tagging_frame(
        profiles,
        scan_table(settings.home, "licenses"),
        scan_events(settings.events_dir),
        scan_table(settings.home, "catalog"),
        ruleset,
        as_of,
        # by column, so two taggers may ask for the same count
        extra_event_aggregates=list({a.column: a for t in learned for a in t.event_aggregates()}.values()),
    ).collect()

    tick("rules")
    raw = rule_tags(frame, ruleset, as_of).collect()
    # The learned taggers' codes may also come from rules (the registry's occupation): one tag per pair is kept,
    # so those wait for the models; every other rule tag is final now.
    model_codes = pl.col("code").is_in([c for t in learned for c in t.codes])
    first, expired_first = finalise(raw.filter(~model_codes), taxonomy, as_of)
    writer.add(first)
    raw = raw.filter(model_codes)

    tick("occupation model")  # the stage keeps its name: progress output and the summary's timings show it
    versions = {}
    for tagger in learned:
        tagger.fit(frame, as_of)
        if tagger.version_ is not None:
            versions[tagger.name] = tagger.version_
            tagger.save(Path(settings.models_dir) / tagger.name / tagger.version_)
            raw = pl.concat([raw, tagger.predict(frame, as_of)], how="vertical_relaxed")
    del frame
    second, expired_second = finalise(raw, taxonomy, as_of)
    writer.add(second)
    return _Tagged(pl.concat([first, second]), expired_first + expired_second, ruleset, as_of, versions.get(MODEL_NAME))


def write_tags(db: sqlite_utils.Database, tagged: _Tagged, writer: store.TagBatchWriter, t0: datetime, tick: StageClock) -> TagSummary:
    tick("write")
    tags = tagged.tags
    written, suppressed = writer.finish()
    by_dim = dict(tags.join(store.read_suppressions(db.conn), on=["subject_id", "code"], how="anti").group_by("dimension").len().sort("dimension").iter_rows())
    tick.done()
    return TagSummary(
        as_of=tagged.as_of.isoformat(),
        rules=len(tagged.ruleset.rules),
        rules_digest=tagged.ruleset.digest,
        tags_written=written,
        suppressed=suppressed,
        expired=tagged.expired,
        by_dimension=by_dim,
        occupation_model=f"{MODEL_NAME}@{tagged.model_version}" if tagged.model_version else None,
        seconds=round((datetime.now() - t0).total_seconds(), 2),
        stage_seconds=tick.seconds,
        stage_cpu_seconds=tick.cpu_seconds,
    )


def profile_and_tag(settings: Settings, db: sqlite_utils.Database, as_of: date,
                    progress: Progress | None = None) -> tuple["profiler.ProfileSummary", TagSummary]:
    """Profile and tag in one pass: the taggers read the profiles straight from memory while a worker thread
    publishes them, and the tags are written once the profiles are out.

    The result is what ``yiwang profile`` then ``yiwang tag`` would give; the nightly pipeline runs this. A
    bad rules file is found before any profile is computed, and then nothing is published.
    """
    import profiler
    from data.store import connect

    t0 = datetime.now()
    taxonomy = load_taxonomy(settings.data_dir)
    ruleset = check_rules(settings)
    ptick = StageClock(progress, profiler.PROFILE_STAGES)
    batch_id = profiler.new_batch(db, as_of)
    ptick("compute")
    try:
        df = profiler.compute_profiles(settings, as_of)
    except BaseException:
        profiler.end_batch(batch_id)
        raise
    ptick.done()
    # The publisher's own clock times its stages; their CPU seconds are the whole process's, tagging included.
    pub_tick = StageClock(None, profiler.PROFILE_STAGES)
    publisher = connect(settings.db_path)
    writer = store.TagBatchWriter(db, tags_parquet_path(settings))
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="profile-publisher") as pool:
            published = pool.submit(profiler.publish_profiles, settings, publisher, df, batch_id, pub_tick)
            try:
                t1 = datetime.now()
                ttick = StageClock(progress, TAG_STAGES)
                tagged = compute_tags(settings, df.lazy(), ruleset, taxonomy, as_of, ttick, writer)
            finally:
                counts = published.result()  # the profiles are out before the tags that rest on them
                pub_tick.done()
        ptick.seconds.update(pub_tick.seconds)
        ptick.cpu_seconds.update(pub_tick.cpu_seconds)
        profile = profiler.profile_summary(settings, batch_id, as_of, counts, t0, ptick)
        return profile, write_tags(db, tagged, writer, t1, ttick)
    except BaseException:
        writer.abort()
        raise
    finally:
        publisher.close()


def scan_tags(source: Settings | sqlite_utils.Database) -> pl.LazyFrame:
    """Active tags (deleted ones excluded) as a LazyFrame with :data:`taggers.store.TAG_SCHEMA`.

    Given settings, reads the Parquet copy of the last batch and drops tags deleted since; given a store,
    reads the ``tags`` table itself.
    """
    if isinstance(source, sqlite_utils.Database):
        return store.read_tags(source).lazy()
    path = tags_parquet_path(source)
    if not path.exists():
        return pl.LazyFrame(schema=store.TAG_SCHEMA)
    from data.store import connect

    conn = connect(source.db_path, readonly=True)
    try:
        suppressed = store.read_suppressions(conn)
    finally:
        conn.close()
    return pl.scan_parquet(path).join(suppressed.lazy(), on=["subject_id", "code"], how="anti")


def tags_in_force(settings: Settings, db: sqlite_utils.Database, as_of: date | None = None,
                  codes: list[str] | None = None) -> pl.DataFrame:
    """Tags in force (deleted ones excluded), with :data:`taggers.store.TAG_SCHEMA`, for other engines.

    The last batch's Parquet copy when it holds tags, else the ``tags`` table (a store tagged by hand or
    before the copy existed). ``codes`` keeps those codes only; ``as_of`` keeps the tags valid on that day.
    """
    lf = scan_tags(settings)
    if codes is not None:
        lf = lf.filter(pl.col("code").is_in(sorted(codes)))
    df = lf.collect()
    if df.height == 0:
        df = store.read_tags(db, None if codes is None else sorted(codes))
    df = df.with_columns(
        pl.col("valid_from").cast(pl.String).str.to_date("%Y-%m-%d", strict=False),
        pl.col("valid_until").cast(pl.String).str.to_date("%Y-%m-%d", strict=False),
    )
    if as_of is not None:
        df = df.filter(
            (pl.col("valid_from").is_null() | (pl.col("valid_from") <= as_of))
            & (pl.col("valid_until").is_null() | (pl.col("valid_until") >= as_of))
        )
    return df

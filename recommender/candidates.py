"""Candidate sources and the per-candidate features the ranker learns from.

A *world* (:class:`World`) is everything known at a cut-off: subjects with their attributes and tags, the
catalogue, the latest licence of each type per holder, and the subject x item interaction summary. Subjects and
items carry dense integer indices (``sidx``, ``iidx``) so that the large frames join on integers.

Sources, each giving ``(sidx, iidx, <its features>)``:

- ``implicit``: top-K of the implicit-feedback model (any object with the shared recommender contract);
- ``tags``: items whose declared life events / crowds / occupations / industries match the subject's tags;
- ``renewals``: the item renewing a licence that expires within ``settings.renewal_window_days``;
- ``neighbours``: item-to-item neighbours of the subject's recent interactions (and those items themselves);
- ``popular``: popular within each of the subject's crowds, its district and age band (industry for
  enterprises), and city-wide, so that a subject with no history still gets a full list.

All of it is Polars over integer keys; nothing loops over subjects in Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, timedelta

import numpy as np
import polars as pl
import scipy.sparse as sp

from data.facts import (
    age_years, district_of_department, end_of_as_of_day_utc, enterprise_size_band,
    latest_licence_per_type, popularity_age_band,
)
from data.reference import LICENSE_TYPES_FILE, read_reference_table
from data.registry import scan_table

from recommender.config import RecommenderConfig
from recommender.filters import item_conditions, with_item_conditions
from recommender.reasons import sensitive_codes

KIND_CODE = {"person": 0, "enterprise": 1, "unknown": 2}

FEATURES = [
    "f_implicit", "f_implicit_rank", "f_tag", "f_tag_n", "f_tag_life", "f_renew", "f_expiry_days",
    "f_nbr", "f_hist_w", "f_hist_days", "f_hist_pos", "f_pop", "f_pop_district", "f_pop_band", "f_pop_crowd",
    "p_kind", "p_age", "p_hukou", "p_activity", "p_n_tags",
    "i_category", "i_once", "i_restricted", "i_n_tags", "i_district_run",
]
CATEGORICAL_FEATURES = ["i_category", "p_kind"]


# What is known on ``as_of``: events strictly before the first instant after it in Shanghai (data.facts).
cutoff = end_of_as_of_day_utc


@dataclass
class World:
    """What is known at ``as_of`` (see module docstring); frames are eager and keyed by sidx / iidx."""

    as_of: date
    subjects: pl.DataFrame      # sidx, subject_id, kind, age, age_band, district, local_hukou, industry,
                                # enterprise_age_years
    tags: pl.DataFrame          # sidx, code, dimension, confidence, valid_from
    items: pl.DataFrame         # iidx, item_id, name, audience, category, ... , item_district, i_* features,
                                # min_enterprise_age_years, own_interest_only (data/item_conditions.csv)
    item_tags: pl.DataFrame     # iidx, code
    licenses: pl.DataFrame      # sidx, license_type, expires_on (latest licence per holder and type)
    inter: pl.DataFrame         # sidx, iidx, weight, recent_w, last_ts, n_pos, completed
    groups: pl.DataFrame        # sidx, gtype (district/band/crowd), gkey
    interest: pl.DataFrame      # sidx, iidx: own-interest-only items the subject's own recent events touched
    meta: dict = field(default_factory=dict)

    @property
    def n_subjects(self) -> int:
        return self.subjects.height

    @property
    def n_items(self) -> int:
        return self.items.height

    def restrict(self, sidx: pl.Series) -> "World":
        """The same world seen by the subjects ``sidx`` only (their rows of subjects, tags, licences, interactions
        and groups; the catalogue whole). Candidate sources and features of a chunk of subjects read only their
        own rows, so each per-subject table is scanned once per chunk instead of once per source and join (at 1M
        subjects that was 12M interaction rows joined and grouped again for every chunk).

        World-wide tables (popularity, neighbours) must come from the whole world, never from a restricted one.
        """
        sidx = sidx.cast(pl.UInt32)
        if sidx.len() == 0:
            keep = pl.lit(False)
        elif sidx.is_sorted() and int(sidx[-1]) - int(sidx[0]) + 1 == sidx.len() and sidx.n_unique() == sidx.len():
            keep = pl.col("sidx").is_between(int(sidx[0]), int(sidx[-1]))  # a contiguous chunk: no hash set
        else:
            keep = pl.col("sidx").is_in(sidx.implode())
        return replace(self, subjects=self.subjects.filter(keep), tags=self.tags.filter(keep),
                       licenses=self.licenses.filter(keep), inter=self.inter.filter(keep),
                       groups=self.groups.filter(keep), interest=self.interest.filter(keep))


# -- building the world ----------------------------------------------------------------------------


def load_items(home) -> pl.DataFrame:
    """The catalogue with dense indices, parsed tag lists and the district of district-run items."""
    cat = scan_table(home, "catalog").sort("item_id").collect()
    items = cat.with_row_index("iidx").with_columns(
        pl.col("iidx").cast(pl.UInt32),
        district_of_department(pl.col("department")).alias("item_district"),
        pl.col("industries").fill_null("").str.split("|").list.filter(pl.element() != "").alias("industry_list"),
        pl.col("once_per_subject").fill_null(False),
        pl.col("local_hukou_only").fill_null(False),
    )
    categories = sorted(items["category"].unique().drop_nulls().to_list())
    items = items.with_columns(
        pl.col("category").replace_strict(categories, list(range(len(categories))), default=-1)
        .cast(pl.Int32).alias("i_category"),
        pl.col("once_per_subject").cast(pl.Int8).alias("i_once"),
        (pl.col("min_age").is_not_null() | pl.col("max_age").is_not_null() | pl.col("local_hukou_only"))
        .cast(pl.Int8).alias("i_restricted"),
        pl.col("item_district").is_not_null().cast(pl.Int8).alias("i_district_run"),
    )
    return items


def item_tag_frame(items: pl.DataFrame) -> pl.DataFrame:
    """(iidx, code): the catalogue's declared tags, industries as ``industry:X``."""
    parts = []
    for col in ("life_events", "crowds", "occupations"):
        parts.append(
            items.select("iidx", pl.col(col).fill_null("").str.split("|").alias("code")).explode("code")
        )
    parts.append(
        items.select("iidx", pl.col("industry_list").alias("code")).explode("code")
        .with_columns(pl.concat_str([pl.lit("industry:"), pl.col("code")]).alias("code"))
    )
    out = pl.concat(parts).filter(pl.col("code").is_not_null() & (pl.col("code") != "")).unique()
    return out.with_columns(pl.col("iidx").cast(pl.UInt32)).join(items.select("iidx", "item_district"), on="iidx")


def read_tags(settings, db, as_of: date) -> pl.DataFrame:
    """Tags in force on ``as_of`` (the taggers' last batch, minus what citizens deleted since): subject_id, code,
    dimension, confidence, valid_from."""
    from taggers import tags_in_force

    return tags_in_force(settings, db, as_of).select("subject_id", "code", "dimension", "confidence", "valid_from")


def build_world(settings, db, cfg: RecommenderConfig, as_of: date, events: pl.LazyFrame | None = None) -> World:
    """Everything the candidate sources need, as known on ``as_of`` (events after it are ignored).

    ``events`` defaults to the stored event log; experiments pass a training slice instead.
    """
    from data.eventlog import scan_events

    home = settings.home
    if events is None:
        events = scan_events(settings.events_dir)
    people = scan_table(home, "people").select(
        pl.col("person_id").alias("subject_id"), pl.lit("person").alias("kind"), "birth_date", "district",
        "local_hukou", pl.lit(None, dtype=pl.String).alias("industry"), "occupation",
        pl.lit(None, dtype=pl.String).alias("size"),
    )
    ents = scan_table(home, "enterprises").select(
        pl.col("enterprise_id").alias("subject_id"), pl.lit("enterprise").alias("kind"),
        pl.lit(None, dtype=pl.Date).alias("birth_date"), "district", pl.lit(None, dtype=pl.Boolean).alias("local_hukou"),
        "industry", pl.lit(None, dtype=pl.String).alias("occupation"), "founded_on",
        # Enterprises are banded by industry and size (the catalogue's enterprise items differ by both).
        enterprise_size_band(pl.col("employees")).alias("size"),
    )
    # Only what existed on as_of: a child born, a company founded or a licence issued later is not known yet.
    people = people.filter(pl.col("birth_date").is_null() | (pl.col("birth_date") <= as_of)).with_columns(
        pl.lit(None, dtype=pl.Int32).alias("enterprise_age_years"))
    ents = ents.filter(pl.col("founded_on").is_null() | (pl.col("founded_on") <= as_of)).with_columns(
        age_years("founded_on", as_of).alias("enterprise_age_years")).drop("founded_on")
    registered = pl.concat([people, ents]).unique("subject_id", keep="first")

    end = cutoff(as_of)
    start = end - timedelta(days=cfg["interactions"]["history_days"])
    ev = events.filter((pl.col("ts") < end) & (pl.col("ts") >= start)).select("subject_id", "item_id", "action", "ts")
    # Subjects seen only in the event log are "unknown": behaviour-only, no registry attributes.
    unknown = (
        ev.select("subject_id").unique().join(registered.select("subject_id"), on="subject_id", how="anti")
        .with_columns(
            pl.lit("unknown").alias("kind"), pl.lit(None, dtype=pl.Date).alias("birth_date"),
            pl.lit(None, dtype=pl.String).alias("district"), pl.lit(None, dtype=pl.Boolean).alias("local_hukou"),
            pl.lit(None, dtype=pl.String).alias("industry"), pl.lit(None, dtype=pl.String).alias("occupation"),
            pl.lit(None, dtype=pl.String).alias("size"), pl.lit(None, dtype=pl.Int32).alias("enterprise_age_years"),
        )
    )
    subjects = (
        pl.concat([registered, unknown.select(registered.collect_schema().names())])
        .sort("subject_id").with_row_index("sidx")
        .with_columns(pl.col("sidx").cast(pl.UInt32), age_years("birth_date", as_of).alias("age"))
        .with_columns(
            pl.when(pl.col("kind") == "person")
            .then(popularity_age_band(pl.col("age")))
            .when(pl.col("kind") == "enterprise")
            .then(pl.concat_str([pl.lit("industry "), pl.col("industry"), pl.lit(" "), pl.col("size")]))
            .alias("age_band")
        )
        .collect()
    )

    # The conditions come after the i_* features: they decide eligibility only, never what the ranker learns.
    items = with_item_conditions(load_items(home), item_conditions(settings.data_dir))
    item_tags = item_tag_frame(items)
    sid = subjects.select("subject_id", "sidx")
    iid = items.select("item_id", "iidx")

    tags = read_tags(settings, db, as_of)
    tags = tags.join(sid, on="subject_id").select("sidx", "code", "dimension", "confidence", "valid_from")
    # Industry is a registry attribute of every enterprise, matched against the catalogue's industries column.
    industry = subjects.filter(pl.col("industry").is_not_null()).select(
        "sidx", pl.concat_str([pl.lit("industry:"), pl.col("industry")]).alias("code"),
        pl.lit("industry").alias("dimension"), pl.lit(1.0).alias("confidence"),
        pl.lit(None, dtype=pl.Date).alias("valid_from"),
    )
    tags = pl.concat([tags, industry], how="vertical_relaxed").unique(["sidx", "code"], keep="first")

    lic = (
        scan_table(home, "licenses").filter(pl.col("issued_on").is_null() | (pl.col("issued_on") <= as_of)).collect()
        .join(sid, left_on="holder_id", right_on="subject_id")
        # The latest licence of a type decides: once renewed (a later expiry appears) the old one no longer counts.
        .pipe(latest_licence_per_type, holder="sidx")
        .collect()
    )

    weights = cfg.action_weights
    half_life = float(cfg["interactions"]["half_life_days"])
    recent_start = end - timedelta(days=cfg["candidates"]["popular_days"])
    positive = cfg["interactions"]["positive_actions"]
    age_days = (pl.lit(end) - pl.col("ts")).dt.total_seconds() / 86400.0
    inter = (
        ev.with_columns(
            (pl.col("action").replace_strict(weights, default=0.0, return_dtype=pl.Float64)
             * (0.5 ** (age_days / half_life))).alias("w"),
            pl.col("action").replace_strict(weights, default=0.0, return_dtype=pl.Float64).alias("w_raw"),
        )
        .join(sid.lazy(), on="subject_id").join(iid.lazy(), on="item_id")
        .group_by("sidx", "iidx").agg(
            pl.col("w").sum().cast(pl.Float32).alias("weight"),
            pl.col("w_raw").filter(pl.col("ts") >= recent_start).sum().cast(pl.Float32).alias("recent_w"),
            pl.col("ts").max().alias("last_ts"),
            pl.col("action").is_in(positive).sum().cast(pl.Int32).alias("n_pos"),
            (pl.col("action") == "complete").any().alias("completed"),
        )
        .with_columns(((pl.lit(end) - pl.col("last_ts")).dt.total_seconds() / 86400.0).cast(pl.Float32)
                      .alias("days_since"))
        .collect()
    )

    # Interest in an own-interest-only item: any event of the subject's own on it within candidates.recent_days.
    interest = (
        inter.filter(pl.col("days_since") <= cfg["candidates"]["recent_days"])
        .join(items.filter(pl.col("own_interest_only")).select("iidx"), on="iidx")
        .select("sidx", "iidx")
    )

    crowd_groups = tags.filter(pl.col("dimension").is_in(["crowd", "enterprise"])).select(
        "sidx", pl.lit("crowd").alias("gtype"), pl.col("code").alias("gkey")
    )
    groups = pl.concat([
        subjects.filter(pl.col("district").is_not_null()).select(
            "sidx", pl.lit("district").alias("gtype"), pl.col("district").alias("gkey")),
        subjects.filter(pl.col("age_band").is_not_null()).select(
            "sidx", pl.lit("band").alias("gtype"), pl.col("age_band").alias("gkey")),
        crowd_groups,
    ])
    return World(as_of=as_of, subjects=subjects.drop("birth_date"), tags=tags, items=items, item_tags=item_tags,
                 licenses=lic, inter=inter, groups=groups, interest=interest,
                 meta={"renewal_items": renewal_items(settings.data_dir),
                       "sensitive": sensitive_codes(settings.data_dir)})


def renewal_items(data_dir) -> dict[str, str]:
    """license_type -> the catalogue item that renews it, from the licence-type reference table."""
    df = read_reference_table(data_dir, LICENSE_TYPES_FILE)
    if df is None or "renewal_item_id" not in df.columns:
        return {}
    df = df.filter(pl.col("renewal_item_id").is_not_null() & (pl.col("renewal_item_id") != ""))
    return dict(zip(df["license_type"].to_list(), df["renewal_item_id"].to_list()))


# -- popularity and neighbours ---------------------------------------------------------------------


def popularity(world: World) -> dict[str, pl.DataFrame]:
    """Recent popularity: global (iidx, f_pop) and per group (gtype, gkey, iidx, rate).

    An item's popularity is the sum over subjects of log1p(recent action weight): many people doing a thing
    counts for more than one person doing it often.
    """
    recent = world.inter.filter(pl.col("recent_w") > 0).select(
        "sidx", "iidx", pl.col("recent_w").log1p().alias("p")
    )
    n_subj = max(world.n_subjects, 1)
    glob = recent.group_by("iidx").agg((pl.col("p").sum() / n_subj * 1000).cast(pl.Float32).alias("f_pop"))
    sizes = world.groups.group_by("gtype", "gkey").agg(pl.len().alias("n"))
    grp = (
        recent.join(world.groups, on="sidx")
        .group_by("gtype", "gkey", "iidx").agg(pl.col("p").sum())
        .join(sizes, on=["gtype", "gkey"])
        .with_columns((pl.col("p") / pl.col("n") * 1000).cast(pl.Float32).alias("rate"))
        .select("gtype", "gkey", "iidx", "rate")
    )
    return {"global": glob, "group": grp}


def item_neighbours(world: World, per_item: int) -> pl.DataFrame:
    """(iidx, nbr, sim): cosine similarity of items over subjects' decayed interaction weights, top per item."""
    n_s, n_i = world.n_subjects, world.n_items
    if world.inter.height == 0 or n_i == 0:
        return pl.DataFrame(schema={"iidx": pl.UInt32, "nbr": pl.UInt32, "sim": pl.Float32})
    x = sp.csr_matrix(
        (np.log1p(world.inter["weight"].to_numpy()).astype(np.float32),
         (world.inter["sidx"].to_numpy(), world.inter["iidx"].to_numpy())),
        shape=(n_s, n_i),
    )
    g = (x.T @ x).toarray()  # items x items; the catalogue is a few thousand items, so dense is cheap
    norms = np.sqrt(np.diag(g)).astype(np.float32)
    norms[norms == 0] = 1.0
    sim = g / norms[:, None] / norms[None, :]
    np.fill_diagonal(sim, 0.0)
    k = min(per_item, n_i - 1) if n_i > 1 else 0
    if k <= 0:
        return pl.DataFrame(schema={"iidx": pl.UInt32, "nbr": pl.UInt32, "sim": pl.Float32})
    top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(sim, top, axis=1)
    out = pl.DataFrame({
        "iidx": np.repeat(np.arange(n_i, dtype=np.uint32), k),
        "nbr": top.ravel().astype(np.uint32),
        "sim": vals.ravel().astype(np.float32),
    })
    return out.filter(pl.col("sim") > 0)


# -- the sources -----------------------------------------------------------------------------------


def ranked_desc(score: pl.Expr, tie: str = "iidx") -> pl.Expr:
    """Ordinal rank by ``score`` descending, ties to the lower ``tie`` (use with ``.over(...)``).

    Group-by and join outputs have no stable row order, so a plain "ordinal" rank would break ties by arrival and
    pick a different tied item on every run: the same model and as-of must give the same feed.
    """
    return pl.struct((-score.cast(pl.Float64)).alias("_neg"), pl.col(tie)).rank("ordinal")


def _top_per_subject(df: pl.DataFrame, score: str, k: int) -> pl.DataFrame:
    return df.filter(ranked_desc(pl.col(score)).over("sidx") <= k)


def tag_candidates(world: World, sidx: pl.Series, k: int, pop: pl.DataFrame) -> pl.DataFrame:
    """Items whose declared tags match the subject's tags: f_tag (sum of confidences), f_tag_n, f_tag_life, tag_code."""
    t = world.tags.filter(pl.col("sidx").is_in(sidx.implode())).join(
        world.subjects.select("sidx", "district"), on="sidx", how="left")
    # District-run items of other districts would be filtered out later anyway: drop them before aggregating.
    m = t.join(world.item_tags, on="code").filter(
        pl.col("item_district").is_null() | pl.col("district").is_null() | (pl.col("item_district") == pl.col("district"))
    )
    if m.height == 0:
        return pl.DataFrame(schema={"sidx": pl.UInt32, "iidx": pl.UInt32, "f_tag": pl.Float32, "f_tag_n": pl.Int32,
                                    "f_tag_life": pl.Int8, "tag_code": pl.String})
    # The reason names the most telling tag: a life event first, then the most confident; never a sensitive one
    # (tag_code is null when only a sensitive tag matched: the item stays a candidate, its reason says nothing).
    sensitive = sorted(world.meta.get("sensitive", ()))
    m = m.with_columns(
        ((pl.col("dimension") == "life_event").cast(pl.Float64) * 10 + pl.col("confidence")
         - pl.col("code").is_in(sensitive).cast(pl.Float64) * 100).alias("_pri")
    )
    agg = m.with_columns(_pair_key()).group_by("key").agg(
        pl.col("sidx").first(), pl.col("iidx").first(),
        pl.col("confidence").sum().cast(pl.Float32).alias("f_tag"),
        pl.len().cast(pl.Int32).alias("f_tag_n"),
        (pl.col("dimension") == "life_event").any().cast(pl.Int8).alias("f_tag_life"),
        pl.col("code").sort_by(["_pri", "code"], descending=[True, False]).first().alias("tag_code"),
    ).drop("key").with_columns(
        pl.when(pl.col("tag_code").is_in(sensitive)).then(None).otherwise(pl.col("tag_code")).alias("tag_code"))
    agg = agg.join(pop, on="iidx", how="left").with_columns(
        (pl.col("f_tag") + pl.col("f_tag_life") * 2 + pl.col("f_pop").fill_null(0) * 1e-3).alias("_s")
    )
    return _top_per_subject(agg, "_s", k).drop("_s", "f_pop")


def renewal_candidates(world: World, sidx: pl.Series, window_days: int, grace_days: int, k: int) -> pl.DataFrame:
    """Licences expiring within the window (or expired within the grace) -> the catalogue item renewing them."""
    as_of = world.as_of
    lic = world.licenses.filter(
        pl.col("sidx").is_in(sidx.implode())
        & (pl.col("expires_on") <= as_of + timedelta(days=window_days))
        & (pl.col("expires_on") >= as_of - timedelta(days=grace_days))
    )
    renew = world.items.filter(pl.col("renews_license").is_not_null()).select(
        "iidx", pl.col("renews_license").alias("license_type")
    )
    primary = world.meta.get("renewal_items", {})
    out = lic.join(renew, on="license_type").join(
        world.items.select("iidx", "item_id"), on="iidx"
    ).with_columns(
        # Where the licence-type table names THE renewal item, only that one is a statutory renewal; other
        # items touching the licence (endorsements, replacements) stay ordinary candidates.
        pl.when(pl.col("license_type").is_in(list(primary)))
        .then(pl.col("item_id") == pl.col("license_type").replace_strict(primary, default=None, return_dtype=pl.String))
        .otherwise(True).alias("renew_primary")
    ).filter(pl.col("renew_primary")).select(
        "sidx", "iidx", pl.lit(1, dtype=pl.Int8).alias("f_renew"),
        ((pl.col("expires_on") - pl.lit(as_of)).dt.total_days()).cast(pl.Float32).alias("f_expiry_days"),
        "license_type", pl.col("expires_on").alias("license_expires_on"),
    )
    out = out.sort("f_expiry_days").unique(["sidx", "iidx"], keep="first")
    return _top_per_subject(out.with_columns((-pl.col("f_expiry_days")).alias("_s")), "_s", k).drop("_s")


def neighbour_candidates(world: World, sidx: pl.Series, nbrs: pl.DataFrame, recent_items: int, recent_days: int,
                         k: int) -> pl.DataFrame:
    """Neighbours of each subject's most recent items: f_nbr (sum of similarities), nbr_src (the closest source)."""
    recent = world.inter.filter(pl.col("sidx").is_in(sidx.implode()) & (pl.col("days_since") <= recent_days))
    recent = recent.filter(ranked_desc(pl.col("last_ts").dt.epoch("us")).over("sidx") <= recent_items)
    m = recent.select("sidx", pl.col("iidx").alias("src")).join(
        nbrs.rename({"iidx": "src", "nbr": "iidx"}), on="src"
    )
    agg = m.group_by("sidx", "iidx").agg(
        pl.col("sim").sum().cast(pl.Float32).alias("f_nbr"),
        pl.col("src").sort_by(["sim", "src"], descending=[True, False]).first().alias("nbr_src"),
    )
    return _top_per_subject(agg, "f_nbr", k)


def history_candidates(world: World, sidx: pl.Series, recent_items: int, recent_days: int) -> pl.DataFrame:
    """The subject's own recent items: returning to a service is the commonest next step."""
    recent = world.inter.filter(pl.col("sidx").is_in(sidx.implode()) & (pl.col("days_since") <= recent_days))
    recent = recent.filter(ranked_desc(pl.col("weight")).over("sidx") <= recent_items * 2)
    return recent.select("sidx", "iidx", pl.lit(1, dtype=pl.Int8).alias("src_hist"))


def popular_candidates(world: World, sidx: pl.Series, pop: dict[str, pl.DataFrame], k: int) -> pl.DataFrame:
    """Top items of each group the subject belongs to, plus city-wide: pop_group names the strongest group.

    A sensitive crowd (hardship, disability) adds candidates but is never the group named: the strongest other
    group is, or none (null, read as city-wide) when the item came from that crowd alone.
    """
    named = ~pl.col("pop_group").is_in([f"crowd:{c}" for c in sorted(world.meta.get("sensitive", ()))])
    top_grp = pop["group"].filter(ranked_desc(pl.col("rate")).over("gtype", "gkey") <= k)
    g = world.groups.filter(pl.col("sidx").is_in(sidx.implode())).join(top_grp, on=["gtype", "gkey"])
    top_glob = pop["global"].sort(["f_pop", "iidx"], descending=[True, False]).head(k)
    glob = pl.DataFrame({"sidx": sidx}).join(top_glob.select("iidx"), how="cross").with_columns(
        pl.lit("global").alias("gtype"), pl.lit("").alias("gkey"), pl.lit(0.0, dtype=pl.Float32).alias("rate")
    )
    both = pl.concat([g.select("sidx", "iidx", "gtype", "gkey", "rate"),
                      glob.select("sidx", "iidx", "gtype", "gkey", "rate")])
    return both.with_columns(pl.concat_str([pl.col("gtype"), pl.col("gkey")], separator=":").alias("pop_group")) \
        .group_by("sidx", "iidx").agg(
        pl.col("pop_group").filter(named).sort_by(pl.col("rate").filter(named), pl.col("pop_group").filter(named),
                                                   descending=[True, False]).first(),
        pl.lit(1, dtype=pl.Int8).alias("src_pop"),
    )


def interaction_matrix(world: World, sidx: np.ndarray | None = None, item_cols: np.ndarray | None = None,
                       n_cols: int | None = None) -> sp.csr_matrix:
    """Subjects x items CSR of decayed confidences; rows = ``sidx`` (default all), columns via ``item_cols``."""
    inter = world.inter
    if sidx is None:
        rows, n_rows = inter["sidx"].to_numpy(), world.n_subjects
    else:
        pos = pl.DataFrame({"sidx": pl.Series(sidx, dtype=pl.UInt32), "row": np.arange(len(sidx), dtype=np.int64)})
        inter = inter.join(pos, on="sidx")
        rows, n_rows = inter["row"].to_numpy(), len(sidx)
    cols = inter["iidx"].to_numpy().astype(np.int64)
    vals = inter["weight"].to_numpy().astype(np.float32)
    if item_cols is not None:
        cols = item_cols[cols]
        keep = cols >= 0
        rows, cols, vals = rows[keep], cols[keep], vals[keep]
    m = sp.csr_matrix((vals, (rows, cols)), shape=(n_rows, n_cols or world.n_items), dtype=np.float32)
    m.sum_duplicates()
    m.sort_indices()
    return m


@dataclass
class ImplicitSource:
    """A fitted implicit model (the shared contract of :mod:`recommender.models`) and the ids of its rows/columns.

    Ids, not indices, tie it to a world: a model trained last week serves today's subjects and catalogue, subjects
    it never saw are folded in from their history (or scored from it, for item-based models).
    """

    model: object
    subject_ids: np.ndarray
    item_ids: np.ndarray

    def _train_rows(self) -> pl.DataFrame:
        """(subject_id, row) of the model's users, built once (every chunk of subjects joins it)."""
        cached = getattr(self, "_rows_frame", None)
        if cached is None:
            cached = self._rows_frame = pl.DataFrame({
                "subject_id": pl.Series(self.subject_ids, dtype=pl.String),
                "row": np.arange(len(self.subject_ids), dtype=np.int64)})
        return cached

    def topk(self, world: World, sidx: pl.Series, k: int, *, filter_seen: bool = True) -> pl.DataFrame:
        empty = pl.DataFrame(schema={"sidx": pl.UInt32, "iidx": pl.UInt32, "f_implicit": pl.Float32,
                                     "f_implicit_rank": pl.Float32})
        if k <= 0 or len(sidx) == 0:
            return empty
        ids = world.subjects.select("sidx", "subject_id").filter(pl.col("sidx").is_in(sidx.implode())).sort("sidx")
        rows = ids.join(self._train_rows(), on="subject_id", how="left", maintain_order="left")["row"] \
            .fill_null(-1).to_numpy()
        col_of = (
            world.items.select("iidx", "item_id")
            .join(pl.DataFrame({"item_id": pl.Series(self.item_ids, dtype=pl.String),
                                "col": np.arange(len(self.item_ids), dtype=np.int64)}), on="item_id", how="left")
            .sort("iidx")["col"].fill_null(-1).to_numpy()
        )
        iidx_of = np.full(len(self.item_ids), -1, dtype=np.int64)
        iidx_of[col_of[col_of >= 0]] = np.flatnonzero(col_of >= 0)
        X = interaction_matrix(world, ids["sidx"].to_numpy(), col_of, len(self.item_ids))
        # Chunks of users scored in two threads (the products and partitions release the GIL): the batch has 2 cores.
        items, scores = self.model.recommend(rows, X, k=k, filter_seen=filter_seen, chunk_size=4096, n_threads=2)
        kk = items.shape[1]
        out = pl.DataFrame({
            "sidx": np.repeat(ids["sidx"].to_numpy(), kk),
            "col": items.ravel(),
            "f_implicit": scores.ravel(),
            "f_implicit_rank": np.tile(np.arange(1, kk + 1, dtype=np.float32), len(ids)),
        }).filter(pl.col("col") >= 0)
        out = out.with_columns(pl.Series("iidx", iidx_of[out["col"].to_numpy()]))
        return out.filter(pl.col("iidx") >= 0).select(
            pl.col("sidx").cast(pl.UInt32), pl.col("iidx").cast(pl.UInt32),
            pl.col("f_implicit").cast(pl.Float32), pl.col("f_implicit_rank").cast(pl.Float32),
        )


@dataclass
class SourceTables:
    """World-wide tables computed once per run and shared by every chunk of subjects."""

    pop: dict[str, pl.DataFrame]
    nbrs: pl.DataFrame


def source_tables(world: World, cfg: RecommenderConfig) -> SourceTables:
    return SourceTables(pop=popularity(world), nbrs=item_neighbours(world, cfg["candidates"]["neighbours_per_item"]))


def candidates(world: World, tables: SourceTables, cfg: RecommenderConfig, sidx: pl.Series, *,
               model: ImplicitSource | None = None,
               renewal_window_days: int = 90, personalised: bool = True) -> pl.DataFrame:
    """All candidates of the given subjects, one row per (sidx, iidx), with every source's columns.

    ``personalised=False`` keeps only what needs no profile or behaviour: city-wide popularity.
    """
    c = cfg["candidates"]
    sidx = sidx.cast(pl.UInt32)
    if not personalised:
        top = tables.pop["global"].sort(["f_pop", "iidx"], descending=[True, False]).head(c["popular_per_group"] * 4)
        return _with_source_columns(pl.DataFrame({"sidx": sidx}).join(top.select("iidx"), how="cross").with_columns(
            pl.lit("global:").alias("pop_group"), pl.lit(1, dtype=pl.Int8).alias("src_pop")
        ))
    parts = [
        model.topk(world, sidx, c["implicit"]) if model is not None else pl.DataFrame(
            schema={"sidx": pl.UInt32, "iidx": pl.UInt32}),
        tag_candidates(world, sidx, c["tags"], tables.pop["global"]),
        renewal_candidates(world, sidx, renewal_window_days, c["renewal_grace_days"], c["renewals"]),
        neighbour_candidates(world, sidx, tables.nbrs, c["recent_items"], c["recent_days"], c["neighbours"]),
        history_candidates(world, sidx, c["recent_items"], c["recent_days"]),
        popular_candidates(world, sidx, tables.pop, c["popular_per_group"]),
    ]
    parts = [p for p in parts if p.height]
    if not parts:
        return _with_source_columns(pl.DataFrame(schema={"sidx": pl.UInt32, "iidx": pl.UInt32}))
    # Each source contributes its own columns once per pair: join them on one 64-bit pair key (much faster
    # than joining or grouping on two columns at tens of millions of rows).
    parts = [p.with_columns(_pair_key()).drop("sidx", "iidx") for p in parts]
    out = pl.concat([p.select("key") for p in parts]).unique()
    for p in parts:
        out = out.join(p, on="key", how="left")
    return _with_source_columns(out.with_columns(
        (pl.col("key") // (1 << 32)).cast(pl.UInt32).alias("sidx"), (pl.col("key") % (1 << 32)).cast(pl.UInt32).alias("iidx"),
    ).drop("key"))


def _pair_key() -> pl.Expr:
    return (pl.col("sidx").cast(pl.UInt64) * (1 << 32) + pl.col("iidx").cast(pl.UInt64)).alias("key")


SOURCE_COLUMNS = {
    "f_implicit": pl.Float32, "f_implicit_rank": pl.Float32, "f_tag": pl.Float32, "f_tag_n": pl.Int32,
    "f_tag_life": pl.Int8, "f_renew": pl.Int8, "f_expiry_days": pl.Float32, "f_nbr": pl.Float32,
    "tag_code": pl.String, "nbr_src": pl.UInt32, "src_hist": pl.Int8, "src_pop": pl.Int8, "pop_group": pl.String,
    "license_type": pl.String, "license_expires_on": pl.Date,
}


def _with_source_columns(cands: pl.DataFrame) -> pl.DataFrame:
    """Every source's columns, null where a source gave nothing, so downstream code sees one schema."""
    missing = [pl.lit(None, dtype=t).alias(c) for c, t in SOURCE_COLUMNS.items() if c not in cands.columns]
    return cands.with_columns(missing) if missing else cands


def add_features(world: World, tables: SourceTables, cands: pl.DataFrame) -> pl.DataFrame:
    """Attach history, popularity, profile and item features to candidate rows (the ranker's FEATURES)."""
    cands = _with_source_columns(cands)
    subj = world.subjects.select(
        "sidx", "kind", "district", "age_band",
        pl.col("kind").replace_strict(KIND_CODE, return_dtype=pl.Int32).alias("p_kind"),
        pl.col("age").cast(pl.Float32).alias("p_age"),
        pl.col("local_hukou").cast(pl.Float32).alias("p_hukou"),
    )
    activity = world.inter.group_by("sidx").agg(pl.col("weight").sum().alias("p_activity"))
    n_tags = world.tags.group_by("sidx").agg(pl.len().cast(pl.Float32).alias("p_n_tags"))
    item_n_tags = world.item_tags.group_by("iidx").agg(pl.len().cast(pl.Float32).alias("i_n_tags"))
    items = world.items.select("iidx", "i_category", "i_once", "i_restricted", "i_district_run")
    grp = tables.pop["group"]
    crowd = (
        cands.select("sidx", "iidx")
        .join(world.groups.filter(pl.col("gtype") == "crowd"), on="sidx")
        .join(grp.filter(pl.col("gtype") == "crowd"), on=["gtype", "gkey", "iidx"])
        .group_by("sidx", "iidx").agg(pl.col("rate").max().alias("f_pop_crowd"))
    )
    out = (
        cands.join(subj, on="sidx", how="left")
        .with_columns(_pair_key())
        .join(world.inter.select(_pair_key(), pl.col("weight").alias("f_hist_w"),
                                 pl.col("days_since").alias("f_hist_days"), pl.col("n_pos").alias("f_hist_pos")),
              on="key", how="left")
        .drop("key")
        .join(tables.pop["global"], on="iidx", how="left")
        .join(grp.filter(pl.col("gtype") == "district").select(pl.col("gkey").alias("district"), "iidx",
                                                                pl.col("rate").alias("f_pop_district")),
              on=["district", "iidx"], how="left")
        .join(grp.filter(pl.col("gtype") == "band").select(pl.col("gkey").alias("age_band"), "iidx",
                                                            pl.col("rate").alias("f_pop_band")),
              on=["age_band", "iidx"], how="left")
        .join(crowd, on=["sidx", "iidx"], how="left")
        .join(activity, on="sidx", how="left")
        .join(n_tags, on="sidx", how="left")
        .join(items, on="iidx", how="left")
        .join(item_n_tags, on="iidx", how="left")
        .with_columns(
            pl.col("f_renew").fill_null(0), pl.col("f_tag").fill_null(0), pl.col("f_tag_n").fill_null(0),
            pl.col("f_tag_life").fill_null(0), pl.col("f_nbr").fill_null(0), pl.col("f_hist_w").fill_null(0),
            pl.col("f_hist_pos").fill_null(0), pl.col("f_pop").fill_null(0), pl.col("f_pop_district").fill_null(0),
            pl.col("f_pop_band").fill_null(0), pl.col("f_pop_crowd").fill_null(0),
            pl.col("p_activity").fill_null(0), pl.col("p_n_tags").fill_null(0), pl.col("i_n_tags").fill_null(0),
        )
    )
    return out


MISSING = -999.0


def feature_matrix(df: pl.DataFrame) -> np.ndarray:
    """The ranker's input: FEATURES as row-major float32, a missing value as :data:`MISSING`.

    A sentinel rather than NaN: LightGBM's NaN path made prediction three times slower on our candidates, and
    every feature is otherwise above -999 (expiry days are at least -grace). Row-major because LightGBM predicts
    row by row and would otherwise copy a column-major matrix first.
    """
    return np.ascontiguousarray(
        df.select([pl.col(c).cast(pl.Float32).fill_nan(MISSING).fill_null(MISSING) for c in FEATURES]).to_numpy(),
        dtype=np.float32,
    )


def heuristic_score(df: pl.DataFrame) -> pl.Expr:
    """A hand-weighted score used before any ranker exists and as the ranker's baseline."""
    return (
        pl.col("f_renew").cast(pl.Float32) * 5
        + pl.col("f_tag_life").cast(pl.Float32) * 1.5 + pl.col("f_tag").clip(0, 3) * 0.5
        + pl.col("f_hist_w").log1p() * 0.8 + pl.col("f_nbr") * 0.8
        + (1.0 / pl.col("f_implicit_rank").fill_null(1e9)) * 2
        + pl.col("f_pop_band").log1p() * 0.3 + pl.col("f_pop_crowd").log1p() * 0.3 + pl.col("f_pop").log1p() * 0.2
    )

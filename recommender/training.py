"""Train, version, promote and serve: the hybrid recommender end to end.

``train`` fits the implicit model and the LambdaRank ranker on a time-ordered split and writes a version under
``settings.models_dir/<version>/`` (config.json, metrics.json, ranker.txt, implicit/ and its id lists);
``promote`` points ``serving_pointers['model_version']`` at a version; ``recommend`` scores, filters, ranks and
publishes a feed for every subject with the promoted version.

The scoring path (:class:`Scorer`) is shared with the offline evaluation, so what is measured is what is served.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time as _time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import polars as pl

from recommender import candidates as C
from recommender.config import RecommenderConfig, from_dict, load_config
from recommender.feeds import POPULAR_PREFIX, publish, read_pointer, set_pointer
from recommender.filters import apply_filters, blocked_pairs, eligible
from recommender.ranker import (
    LambdaRanker, groups_of, heuristic_column, label_candidates, ndcg_at_k, positives,
)
from recommender.reasons import attach_reasons, reference_names
from data.errors import NotFound, StateError
from data.store import RunLock, dead_run

MODEL_POINTER = "model_version"
Progress = Callable[[str, int, int], None] | None


def _step(progress, label: str, done: int = 0, total: int = 1) -> None:
    if progress is not None:
        progress(label, done, total)


# -- building and scoring --------------------------------------------------------------------------


def fit_implicit(world: C.World, cfg: RecommenderConfig) -> C.ImplicitSource:
    from recommender.models import make_model

    X = C.interaction_matrix(world)
    if X.nnz == 0:
        raise StateError(f"no interactions before {world.as_of}: ingest events first (`yiwang ingest`)")
    model = make_model(cfg["model"]["name"], **cfg["model"]["params"]).fit(X)
    return C.ImplicitSource(model, world.subjects["subject_id"].to_numpy(), world.items["item_id"].to_numpy())


@dataclass
class Scorer:
    """Everything needed to rank the candidates of any chunk of subjects of one world."""

    world: C.World
    cfg: RecommenderConfig
    source: C.ImplicitSource | None
    ranker: LambdaRanker | None
    renewal_window_days: int
    blocked: pl.DataFrame
    tables: C.SourceTables = field(init=False)

    def __post_init__(self) -> None:
        self.tables = C.source_tables(self.world, self.cfg)

    def features(self, sidx: pl.Series, personalised: bool = True) -> pl.DataFrame:
        # Every per-subject table cut to these subjects once; popularity and neighbours stay world-wide.
        world = self.world.restrict(sidx)
        cands = C.candidates(world, self.tables, self.cfg, sidx, model=self.source if personalised else None,
                             renewal_window_days=self.renewal_window_days, personalised=personalised)
        cands = apply_filters(cands, world, self.blocked)
        return C.add_features(world, self.tables, cands)

    def rank(self, sidx: pl.Series, n: int) -> pl.DataFrame:
        """Top-``n`` per subject: (sidx, iidx, rank, score, + the columns reasons need)."""
        f = self.features(sidx)
        if f.height == 0:
            return f.with_columns(pl.lit(None, dtype=pl.Int32).alias("rank"), pl.lit(None, dtype=pl.Float32).alias("score"))
        if self.ranker is not None:
            score = pl.Series("score", self.ranker.predict(C.feature_matrix(f)))
        else:
            score = heuristic_column(f)["heuristic"].cast(pl.Float32).alias("score")
        pin_days = self.cfg["serving"]["pin_renewals_within_days"]
        f = f.with_columns(score)
        # Statutory duty before preference: a licence about to expire (or just expired) leads the feed.
        pinned = (pl.col("f_renew") == 1) & (pl.col("f_expiry_days") <= pin_days)
        key = pl.when(pinned).then(1e9 - pl.col("f_expiry_days")).otherwise(pl.col("score"))
        f = f.with_columns(C.ranked_desc(key).over("sidx").cast(pl.Int32).alias("rank"))
        return f.filter(pl.col("rank") <= n).sort("sidx", "rank")


def popular_lists(scorer: Scorer, size: int) -> pl.DataFrame:
    """The non-personalised list of each audience: city-wide popularity, reasons say so."""
    items = scorer.world.items
    pop = scorer.tables.pop["global"].join(items.select("iidx", "item_id", "audience"), on="iidx")
    out = (
        pop.filter(C.ranked_desc(pl.col("f_pop")).over("audience") <= size)
        .with_columns(
            C.ranked_desc(pl.col("f_pop")).over("audience").cast(pl.Int32).alias("rank"),
            pl.concat_str([pl.lit(POPULAR_PREFIX), pl.col("audience")]).alias("subject_id"),
            pl.col("f_pop").alias("score"), pl.lit("global:").alias("pop_group"),
        )
    )
    unknown = out.sort(["score", "iidx"], descending=[True, False]).head(size).with_columns(
        pl.lit(POPULAR_PREFIX + "unknown").alias("subject_id"),
        pl.int_range(1, pl.len() + 1, dtype=pl.Int32).alias("rank"),
    )
    return pl.concat([out, unknown], how="vertical_relaxed")


def to_feed_rows(ranked: pl.DataFrame, world: C.World, names: dict) -> pl.DataFrame:
    """(subject_id, rank, item_id, score, reasons_json) rows for publishing."""
    f = ranked.join(world.subjects.select("sidx", "subject_id"), on="sidx", how="left") if "subject_id" not in ranked.columns else ranked
    if "item_id" not in f.columns:
        f = f.join(world.items.select("iidx", "item_id"), on="iidx", how="left")
    f = attach_reasons(f, world.items, names, world.as_of)
    return f.select("subject_id", pl.col("rank").cast(pl.Int64), "item_id", pl.col("score").cast(pl.Float64),
                    "reasons_json")


# -- training --------------------------------------------------------------------------------------


@dataclass
class TrainSummary:
    version: str
    as_of: str
    path: str
    promoted: bool
    metrics: dict


def _new_version(as_of: date) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")[:-3]
    return f"{as_of.isoformat()}_{stamp}"


def train_models(settings, db, cfg: RecommenderConfig, as_of: date, events: pl.LazyFrame | None = None,
                 progress: Progress = None) -> tuple[C.ImplicitSource, LambdaRanker, dict]:
    """Fit the ranker on the split at ``as_of - label_window_days``, then the serving implicit model at ``as_of``.

    Returns the serving implicit source, the ranker and the training metrics.
    """
    from data.eventlog import scan_events

    if events is None:
        events = scan_events(settings.events_dir)
    rc = cfg["ranker"]
    t0 = _time.perf_counter()
    cut = as_of - timedelta(days=rc["label_window_days"])
    _step(progress, "world at the training cut", 0, 5)
    world_t = C.build_world(settings, db, cfg, cut, events)
    if world_t.n_items == 0:
        raise StateError("the catalogue is empty: run `yiwang ingest` first")
    _step(progress, "implicit model (training cut)", 1, 5)
    source_t = fit_implicit(world_t, cfg)
    pos = positives(events, world_t, cut + timedelta(days=1), as_of, cfg["interactions"]["positive_actions"])
    subj = pos.select("sidx").unique().sort("sidx")
    if subj.height == 0:
        raise StateError(f"no applications or completions between {cut} and {as_of}: nothing to learn the ranker from")
    rng = np.random.default_rng(rc["params"].get("random_state", 42))
    if subj.height > rc["max_training_subjects"]:
        subj = subj.sample(rc["max_training_subjects"], seed=int(rng.integers(2**31)))
    sidx = subj["sidx"].sort()
    _step(progress, "candidates and features", 2, 5)
    # No dismissals here: they describe today's wishes, not what was done in the label window.
    scorer = Scorer(world_t, cfg, source_t, None, settings.renewal_window_days, blocked_pairs(world_t, None))
    frame = label_candidates(scorer.features(sidx), pos)
    pos_s = pos.join(subj, on="sidx")
    n_rel = pos_s.group_by("sidx").agg(pl.len().alias("n"))
    in_cands = int(frame["label"].sum())
    valid_mask = pl.Series(rng.random(subj.height) < rc["validation_fraction"])
    valid_sidx = sidx.filter(valid_mask)
    tr = frame.filter(~pl.col("sidx").is_in(valid_sidx.implode()))
    va = frame.filter(pl.col("sidx").is_in(valid_sidx.implode()))
    tr = tr.filter(pl.col("label").sum().over("sidx") > 0)
    _step(progress, "ranker (LambdaRank)", 3, 5)
    ranker = LambdaRanker(**rc["params"]).fit(C.feature_matrix(tr), tr["label"].to_numpy(), groups_of(tr))
    va = heuristic_column(va).with_columns(pl.Series("ranker", ranker.predict(C.feature_matrix(va))))
    n_rel_va = n_rel.filter(pl.col("sidx").is_in(valid_sidx.implode()))
    train_s = _time.perf_counter() - t0
    _step(progress, "implicit model (serving)", 4, 5)
    world = C.build_world(settings, db, cfg, as_of, events)
    source = fit_implicit(world, cfg)
    _step(progress, "done", 5, 5)
    metrics = {
        "training_cut": cut.isoformat(),
        "label_window_days": rc["label_window_days"],
        "training_subjects": int(subj.height),
        "training_rows": int(frame.height),
        "candidates_per_subject": round(frame.height / max(subj.height, 1), 1),
        "positives": int(pos_s.height),
        "candidate_recall": round(in_cands / max(pos_s.height, 1), 4),
        "validation_subjects": int(valid_sidx.len()),
        "validation_ndcg@10_ranker": round(ndcg_at_k(va, "ranker", 10, n_rel_va), 4),
        "validation_ndcg@10_heuristic": round(ndcg_at_k(va, "heuristic", 10, n_rel_va), 4),
        "feature_gain": {k: round(v, 1) for k, v in sorted(ranker.feature_importance().items(), key=lambda kv: -kv[1])},
        "seconds_ranker_stage": round(train_s, 1),
        "seconds_total": round(_time.perf_counter() - t0, 1),
        "serving_subjects": world.n_subjects,
        "items": world.n_items,
    }
    return source, ranker, metrics


def train(settings, db, as_of: date, progress: Progress = None, *, events: pl.LazyFrame | None = None,
          promote_version: bool = True) -> TrainSummary:
    """Train the implicit model and the ranker as of ``as_of``, save them as a new version, promote it."""
    cfg = load_config(settings)
    source, ranker, metrics = train_models(settings, db, cfg, as_of, events, progress)
    version = _new_version(as_of)
    final = Path(settings.models_dir) / version
    tmp = Path(settings.models_dir) / f".{version}.tmp"
    run = RunLock(settings.home, _training_run(version)).acquire()  # see remove_dead_model_temps
    try:
        _save_version(source, ranker, cfg, metrics, version, as_of, tmp, final)
    finally:
        run.release()
    if promote_version:
        promote(settings, db, version)
    return TrainSummary(version, as_of.isoformat(), str(final), promote_version, metrics)


def _training_run(version: str) -> str:
    return f"train-{version}"


def remove_dead_model_temps(conn, home: Path) -> list[Path]:
    """Delete ``models/.<version>.tmp/`` folders of trainings whose process died (their run lock is free): a
    version folder appears whole by rename or not at all, so nothing else of theirs is left."""
    removed = []
    for tmp in sorted((Path(home) / "models").glob(".*.tmp")):
        with dead_run(home, _training_run(tmp.name.removeprefix(".").removesuffix(".tmp"))) as dead:
            if dead and tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
                removed.append(tmp)
    return removed


def _save_version(source, ranker, cfg, metrics: dict, version: str, as_of: date, tmp: Path, final: Path) -> None:
    tmp.mkdir(parents=True, exist_ok=False)
    source.model.save(tmp / "implicit")
    pl.DataFrame({"subject_id": pl.Series(source.subject_ids, dtype=pl.String)}).write_parquet(tmp / "subjects.parquet")
    pl.DataFrame({"item_id": pl.Series(source.item_ids, dtype=pl.String)}).write_parquet(tmp / "items.parquet")
    ranker.save(tmp / "ranker.txt")
    (tmp / "config.json").write_text(json.dumps(cfg.raw, indent=2, ensure_ascii=False) + "\n")
    (tmp / "metrics.json").write_text(json.dumps(
        {"version": version, "as_of": as_of.isoformat(), "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
         "model": cfg["model"]["name"], **metrics}, indent=2, ensure_ascii=False) + "\n")
    # A version directory appears whole or not at all.
    os.replace(tmp, final)


_VERSION_RE = re.compile(r"^[0-9A-Za-z_.:-]+$")


def _version_dir(settings, version: str) -> Path:
    if not _VERSION_RE.match(version or ""):
        raise NotFound(f"model version {version!r} does not exist")
    path = Path(settings.models_dir) / version
    if not (path / "metrics.json").exists():
        raise NotFound(f"model version {version!r} does not exist under {settings.models_dir} (see `yiwang models`)")
    return path


def promoted_version(db) -> str | None:
    return read_pointer(db.conn, MODEL_POINTER)


def promote(settings, db, version: str) -> str:
    """Serve ``version`` from the next `yiwang recommend` on."""
    _version_dir(settings, version)
    set_pointer(db.conn, MODEL_POINTER, version)
    return version


def list_models(settings, db) -> list[dict]:
    """Every saved version, newest first, with its headline metrics and whether it is promoted."""
    root = Path(settings.models_dir)
    current = promoted_version(db)
    out = []
    for d in sorted(root.glob("*/metrics.json"), reverse=True):
        m = json.loads(d.read_text())
        out.append({
            "version": d.parent.name, "promoted": d.parent.name == current, "as_of": m.get("as_of"),
            "model": m.get("model"), "validation_ndcg@10": m.get("validation_ndcg@10_ranker"),
            "candidate_recall": m.get("candidate_recall"), "trained_at": m.get("trained_at"),
        })
    return out


def load_version(settings, version: str) -> tuple[RecommenderConfig, C.ImplicitSource, LambdaRanker]:
    from recommender.models import load_model

    path = _version_dir(settings, version)
    cfg = from_dict(json.loads((path / "config.json").read_text()), source=str(path / "config.json"))
    source = C.ImplicitSource(
        load_model(path / "implicit"),
        pl.read_parquet(path / "subjects.parquet")["subject_id"].to_numpy(),
        pl.read_parquet(path / "items.parquet")["item_id"].to_numpy(),
    )
    ranker = LambdaRanker.load(path / "ranker.txt", **cfg["ranker"]["params"])
    return cfg, source, ranker


# -- serving ---------------------------------------------------------------------------------------


@dataclass
class RecommendSummary:
    feed_version: int
    model_version: str
    as_of: str
    subjects: int
    rows: int
    seconds: float
    removed_versions: list[int]
    seconds_world: float = 0.0      # loading the model and building what is known at as_of
    seconds_scoring: float = 0.0    # candidates, filters, features, ranker, reasons (overlaps publishing)
    seconds_publish: float = 0.0    # writing feed rows and flipping the pointer


def recommend(settings, db, as_of: date, progress: Progress = None, *, events: pl.LazyFrame | None = None,
              model_version: str | None = None) -> RecommendSummary:
    """Score, filter, rank and publish the feed of every subject with the promoted (or given) model version."""
    t0 = _time.perf_counter()
    version = model_version or promoted_version(db)
    if version is None:
        raise StateError("no model is promoted: run `yiwang train` (or `yiwang models promote VERSION`)")
    cfg, source, ranker = load_version(settings, version)
    # Features must be computed as at training time (the model's config); serving knobs are today's.
    cfg = cfg.with_overrides({"serving": load_config(settings)["serving"]})
    _step(progress, "world", 0, 1)
    world = C.build_world(settings, db, cfg, as_of, events)
    scorer = Scorer(world, cfg, source, ranker, settings.renewal_window_days, blocked_pairs(world, db.conn))
    names = reference_names(settings.data_dir)
    chunk = cfg["serving"]["chunk_subjects"]
    registered = world.subjects["sidx"]
    n_chunks = max(1, -(-registered.len() // chunk))

    # "producing": time this thread spends in frames() (feed rows, waiting for the worker); the rest is publishing.
    timing = {"world": _time.perf_counter() - t0, "scoring": 0.0, "producing": 0.0}

    def score(i: int) -> tuple[pl.DataFrame, float]:
        t = _time.perf_counter()
        return scorer.rank(registered.slice(i * chunk, chunk), settings.feed_size), _time.perf_counter() - t

    def frames(pool: ThreadPoolExecutor) -> Iterator[pl.DataFrame]:
        # Chunk i+1 is scored in the worker while this thread turns chunk i into feed rows and writes them: the
        # Polars, LightGBM and sqlite3 work releases the GIL, and scoring alone leaves part of the 2 cores idle.
        # One chunk ahead only, so at most two chunks' frames are alive at once; chunks are published in order.
        ahead = pool.submit(score, 0)
        t = _time.perf_counter()
        lists = popular_lists(scorer, cfg["serving"]["popular_list_size"])
        rows = to_feed_rows(lists, world, names)
        timing["scoring"] += _time.perf_counter() - t
        timing["producing"] += _time.perf_counter() - t
        yield rows
        for i in range(n_chunks):
            _step(progress, "scoring and publishing", i, n_chunks)
            t = _time.perf_counter()
            ranked, secs = ahead.result()
            ahead = pool.submit(score, i + 1) if i + 1 < n_chunks else None
            t_rows = _time.perf_counter()
            rows = to_feed_rows(ranked, world, names)
            timing["scoring"] += secs + _time.perf_counter() - t_rows
            timing["producing"] += _time.perf_counter() - t
            yield rows
        _step(progress, "scoring and publishing", n_chunks, n_chunks)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="yiwang-score") as pool:
        try:
            summary = publish(db, settings, frames(pool), version, as_of)
        finally:
            pool.shutdown(cancel_futures=True)
    total = _time.perf_counter() - t0
    # Scoring overlaps publishing, so world + scoring + publish can exceed the total: seconds_scoring is the work
    # of scoring (in the worker, plus feed rows), seconds_publish the time this thread spent writing.
    publish_s = total - timing["world"] - timing["producing"]
    return RecommendSummary(summary.version, version, as_of.isoformat(), summary.subjects, summary.rows,
                            round(total, 1), summary.removed_versions, round(timing["world"], 1),
                            round(timing["scoring"], 1), round(publish_s, 1))


def summary_dict(obj) -> dict:
    return asdict(obj)

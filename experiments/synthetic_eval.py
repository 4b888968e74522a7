"""Quality of the hybrid recommender on a synthetic city, against four baselines, per crowd.

    .venv/bin/python experiments/synthetic_eval.py [--config experiments/synthetic.yaml] [--people N]
        [--enterprises M] [--out DIR]

Protocol (temporal): generate the city (``yiwang synth``) as of D, ingest it, and cut at D - 60 days. Profiles,
tags, models and every baseline see only what was known at the cut (events before it, licences issued by then).
Truth: per subject, the items applied for or completed in the 60 test days that they had not applied for or
completed before the cut (new needs: what a proactive portal should surface). Every system ranks 10 items per
test subject with the same exclusion (items the subject already applied for / completed before the cut).

Systems: global popularity; popularity within the subject's crowd (age band or industry when it has no crowd
tag); tag rules only (tag-matched and licence-renewal items, padded with popular ones); the implicit model only;
and the full hybrid (every candidate source, eligibility filters, LambdaRank ranker, pinned statutory renewals).
Writes results.md / results.csv / results_groups.csv / PNG plots (via recommender.evaluation) and summary.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from datetime import date, timedelta
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import polars as pl  # noqa: E402
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator  # noqa: E402

from recommender import candidates as C  # noqa: E402
from recommender.config import load_config  # noqa: E402
from recommender.evaluation import EvalReport, SystemResult, group_breakdown, write_report  # noqa: E402
from recommender.filters import blocked_pairs  # noqa: E402
from recommender.metrics import USER_METRICS, coverage, parse_metrics, per_user  # noqa: E402
from recommender.training import Scorer, fit_implicit, train_models  # noqa: E402
from data import yamlfile  # noqa: E402
from data.errors import ConfigFileError  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class City(_Section):
    people: int = Field(ge=1)
    enterprises: int = Field(ge=0)
    seed: int
    as_of: str  # an ISO date, quoted

    @field_validator("as_of")
    @classmethod
    def _iso(cls, v: str) -> str:
        date.fromisoformat(v)  # ValueError names the bad date
        return v


class GroupRule(_Section):
    """How a group's membership is read from the city's ground truth: exactly one of these."""

    crowd: str | None = None
    occupation: str | None = None
    kind: str | None = None

    @model_validator(mode="after")
    def _one(self):
        if len(self.model_fields_set) != 1:
            raise ValueError("give exactly one of crowd: CODE, occupation: CODE, kind: person|enterprise")
        return self


class Experiment(_Section):
    city: City
    workdir: str
    out: str
    test_days: int = Field(gt=0)
    k: int = Field(gt=0)
    metrics: list[str] | str
    groups: dict[str, GroupRule]

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, v):
        try:
            parse_metrics(v, source="")
        except ConfigFileError as exc:
            raise ValueError(str(exc).removeprefix(": ")) from None
        return v


def load_experiment(path: Path, overrides: dict) -> dict:
    if not path.exists():
        raise ConfigFileError(f"experiment config {path} does not exist")
    doc = yamlfile.read(path, error=ConfigFileError, style=yamlfile.key_style)
    yamlfile.validate(Experiment, doc, error=ConfigFileError, style=yamlfile.key_style)
    cfg = doc.data
    for key, value in overrides.items():
        if value is not None:
            if key in ("people", "enterprises", "seed"):
                cfg["city"][key] = value
            else:
                cfg[key] = value
    cfg["metrics"] = parse_metrics(cfg["metrics"], source=f"{path}: metrics")
    return cfg


def prepare_store(cfg: dict):
    """Generate (or reuse) the city's export, ingest it into a fresh store; returns (settings, db, truth_dir)."""
    from data.ingest import ingest_export
    from data.settings import load_settings
    from yiwang.migrations import open_db
    from data.synth import generate_city

    city = cfg["city"]
    work = (REPO / cfg["workdir"]).resolve()
    tag = f"p{city['people']}_e{city['enterprises']}_s{city['seed']}_{city['as_of']}"
    city_dir = work / tag
    if not (city_dir / "export").exists():
        log(f"synthesising the city {tag}")
        shutil.rmtree(city_dir, ignore_errors=True)
        generate_city(city_dir, city["people"], city["enterprises"], city["seed"], date.fromisoformat(city["as_of"]),
                      fmt="parquet")
    home = city_dir / "home"
    shutil.rmtree(home, ignore_errors=True)
    settings = load_settings(home=home, id_hash_key="synthetic-eval")
    db = open_db(settings.db_path)
    log("ingesting")
    ingest_export(settings, db, city_dir / "export")
    return settings, db, city_dir / "truth"


def group_frame(cfg: dict, truth_dir: Path, world: C.World) -> pl.DataFrame:
    """(subject_id, group) from the city's ground truth: who is elderly, a student, an enterprise, ..."""
    crowds = pl.read_csv(truth_dir / "crowds.csv")
    occ = pl.read_csv(truth_dir / "occupations.csv")
    parts = []
    for name, rule in cfg["groups"].items():
        (kind, value), = rule.items()
        if kind == "crowd":
            ids = crowds.filter(pl.col("code") == value)["subject_id"]
        elif kind == "occupation":
            ids = occ.filter(pl.col("occupation") == value)[occ.columns[0]]
        else:
            ids = world.subjects.filter(pl.col("kind") == value)["subject_id"]
        parts.append(pl.DataFrame({"subject_id": ids.cast(pl.String), "group": name}))
    return pl.concat(parts)


def top_k(frame: pl.DataFrame, score: str, k: int, world: C.World) -> pl.DataFrame:
    ranked = frame.with_columns(pl.col(score).rank("ordinal", descending=True).over("sidx").alias("rank"))
    return (
        ranked.filter(pl.col("rank") <= k)
        .join(world.subjects.select("sidx", "subject_id"), on="sidx")
        .join(world.items.select("iidx", "item_id"), on="iidx")
        .select("subject_id", "item_id", pl.col("rank").cast(pl.Int64), pl.col(score).cast(pl.Float64).alias("score"))
    )


def run(cfg: dict) -> dict:
    t_all = time.perf_counter()
    from data.eventlog import scan_events

    settings, db, truth_dir = prepare_store(cfg)
    as_of = date.fromisoformat(cfg["city"]["as_of"])
    cut = as_of - timedelta(days=cfg["test_days"])
    k = cfg["k"]
    rcfg = load_config(settings)
    positive = rcfg["interactions"]["positive_actions"]

    # Profiles and tags as known at the cut, so no tag is inferred from test-window behaviour.
    # The recommender reads its tags from the taggers (recommender.candidates.read_tags): they must exist first.
    from profiler import build_profiles
    from taggers import run_taggers

    log(f"profiles and tags as of the cut {cut}")
    build_profiles(settings, db, cut)
    run_taggers(settings, db, cut)

    events = scan_events(settings.events_dir)
    end_cut, end = C.cutoff(cut), C.cutoff(as_of)
    world = C.build_world(settings, db, rcfg, cut, events)
    pos_before = (
        events.filter((pl.col("ts") < end_cut) & pl.col("action").is_in(positive))
        .select("subject_id", "item_id").unique().collect()
    )
    truth = (
        events.filter((pl.col("ts") >= end_cut) & (pl.col("ts") < end) & pl.col("action").is_in(positive))
        .select("subject_id", "item_id").unique().collect()
        .join(pos_before, on=["subject_id", "item_id"], how="anti")
        .join(world.subjects.select("subject_id"), on="subject_id", how="semi")
        .join(world.items.select("item_id"), on="item_id", how="semi")
    )
    if truth.height == 0:
        raise ConfigFileError(f"no new applications in the {cfg['test_days']} test days: nothing to evaluate")
    users = truth.select("subject_id").unique().join(world.subjects.select("subject_id", "sidx"), on="subject_id")
    sidx = users["sidx"].sort()
    log(f"truth: {truth.height} new (subject, item) applications of {users.height} subjects; catalogue {world.n_items}")
    exclude = (pos_before.join(world.subjects.select("subject_id", "sidx"), on="subject_id")
               .join(world.items.select("item_id", "iidx"), on="item_id").select("sidx", "iidx"))
    blocked = pl.concat([blocked_pairs(world, None), exclude]).unique()

    systems: dict[str, tuple[pl.DataFrame, float]] = {}
    tables = C.source_tables(world, rcfg)
    pops = C.popular_candidates(world, sidx, tables.pop, rcfg["candidates"]["popular_per_group"] * 4)

    t0 = time.perf_counter()
    glob = tables.pop["global"].sort("f_pop", descending=True).head(k + 200)
    g = pl.DataFrame({"sidx": sidx}).join(glob, how="cross").join(blocked, on=["sidx", "iidx"], how="anti")
    systems["global popularity"] = (top_k(g, "f_pop", k, world), time.perf_counter() - t0)

    t0 = time.perf_counter()
    f = C.add_features(world, tables, pl.concat([pops.select("sidx", "iidx"), g.select("sidx", "iidx")]).unique())
    f = f.join(blocked, on=["sidx", "iidx"], how="anti").with_columns(
        (pl.when(pl.col("f_pop_crowd") > 0).then(pl.col("f_pop_crowd")).otherwise(pl.col("f_pop_band")) * 1e3
         + pl.col("f_pop") * 1e-3).alias("s"))
    systems["popularity within crowd"] = (top_k(f, "s", k, world), time.perf_counter() - t0)

    t0 = time.perf_counter()
    c = rcfg["candidates"]
    tags = C.tag_candidates(world, sidx, 50, tables.pop["global"])
    ren = C.renewal_candidates(world, sidx, settings.renewal_window_days, c["renewal_grace_days"], c["renewals"])
    base = pl.concat([tags.select("sidx", "iidx"), ren.select("sidx", "iidx"), g.select("sidx", "iidx")]).unique()
    rules = (
        base.join(tags, on=["sidx", "iidx"], how="left").join(ren, on=["sidx", "iidx"], how="left")
        .join(tables.pop["global"], on="iidx", how="left").join(blocked, on=["sidx", "iidx"], how="anti")
        .with_columns((pl.col("f_renew").fill_null(0).cast(pl.Float64) * 100 + pl.col("f_tag_life").fill_null(0) * 10
                       + pl.col("f_tag").fill_null(0) + pl.col("f_pop").fill_null(0) * 1e-4).alias("s"))
    )
    systems["tag rules only"] = (top_k(rules, "s", k, world), time.perf_counter() - t0)

    t0 = time.perf_counter()
    log(f"implicit model only ({rcfg['model']['name']})")
    source = fit_implicit(world, rcfg)
    imp = source.topk(world, sidx, k + 50, filter_seen=False).join(blocked, on=["sidx", "iidx"], how="anti")
    systems["implicit model only"] = (top_k(imp, "f_implicit", k, world), time.perf_counter() - t0)

    t0 = time.perf_counter()
    log("hybrid: training the ranker and the implicit model as of the cut")
    h_source, ranker, train_metrics = train_models(settings, db, rcfg, cut, events)
    scorer = Scorer(world, rcfg, h_source, ranker, settings.renewal_window_days, blocked)
    hyb = scorer.rank(sidx, k)
    systems["hybrid (ours)"] = (
        hyb.join(world.subjects.select("sidx", "subject_id"), on="sidx")
        .join(world.items.select("iidx", "item_id"), on="iidx")
        .select("subject_id", "item_id", pl.col("rank").cast(pl.Int64), pl.col("score").cast(pl.Float64)),
        time.perf_counter() - t0,
    )

    metrics = cfg["metrics"]
    results = []
    for name, (recs, secs) in systems.items():
        pu = per_user(recs, truth, k)
        m = {x: float(pu[x].mean()) for x in metrics if x in USER_METRICS}
        if "coverage" in metrics:
            m["coverage"] = coverage(recs, k, world.n_items)
        results.append(SystemResult(name, {}, {x: m[x] for x in metrics}, pu, round(secs, 1), 0.0, pu.height))
        log(f"{name:26s} NDCG@{k} {m.get('ndcg', float('nan')):.4f}")
    report = EvalReport("temporal: last %d days as test, new applications" % cfg["test_days"], k, metrics, results,
                        {"train events": int(events.filter(pl.col("ts") < end_cut).select(pl.len()).collect().item()),
                         "test subjects": users.height, "test (subject, item) pairs": truth.height},
                        world.n_items)
    groups = group_frame(cfg, truth_dir, world)
    report.groups = group_breakdown(results, groups, [m for m in metrics if m in USER_METRICS])

    ndcg = {r.name: r.metrics["ndcg"] for r in results}
    hybrid = ndcg["hybrid (ours)"]
    beaten = {n: v for n, v in ndcg.items() if n != "hybrid (ours)" and v >= hybrid}
    hg = report.groups.filter(pl.col("system") == "hybrid (ours)").sort("ndcg")
    weakest = hg.row(0, named=True) if hg.height else None
    ratio = weakest["ndcg"] / hybrid if weakest and hybrid else None
    report.notes += [
        f"hybrid NDCG@{k} {hybrid:.4f}; beats every baseline: {'yes' if not beaten else 'NO, not ' + ', '.join(beaten)}",
        (f"fairness: weakest group '{weakest['group']}' ({weakest['n_users']} users) NDCG@{k} {weakest['ndcg']:.4f} "
         f"= {ratio:.2f} x overall" if weakest else "fairness: no group has test users"),
        f"ranker training: candidate recall {train_metrics['candidate_recall']}, validation NDCG@10 ranker "
        f"{train_metrics['validation_ndcg@10_ranker']} vs hand-weighted {train_metrics['validation_ndcg@10_heuristic']}",
        f"city: {cfg['city']['people']} persons, {cfg['city']['enterprises']} enterprises, seed {cfg['city']['seed']}, "
        f"as of {as_of}, cut {cut}; total wall time {time.perf_counter() - t_all:.0f} s",
    ]
    out = (REPO / cfg["out"]).resolve()
    written = write_report(report, out, title="Synthetic city: hybrid vs baselines")
    summary = {
        "ndcg@10": ndcg, "hybrid_beats_all": not beaten, "weakest_group": weakest, "weakest_ratio": ratio,
        "metrics": {r.name: r.metrics for r in results}, "train_metrics": train_metrics,
        "groups": report.groups.to_dicts(), "seconds": round(time.perf_counter() - t_all, 1), "config": cfg,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False, default=str) + "\n")
    log("wrote " + ", ".join(str(p) for p in written + [out / "summary.json"]))
    db.conn.close()
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=REPO / "experiments" / "synthetic.yaml")
    ap.add_argument("--people", type=int)
    ap.add_argument("--enterprises", type=int)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    from data.errors import YiwangError

    try:
        cfg = load_experiment(a.config, {"people": a.people, "enterprises": a.enterprises, "seed": a.seed, "out": a.out})
        s = run(cfg)
    except YiwangError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps({"ndcg@10": s["ndcg@10"], "hybrid_beats_all": s["hybrid_beats_all"],
                      "weakest_ratio": s["weakest_ratio"]}, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Any interaction file through the harness: loading options, counted skips, clear errors, reports, CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from recommender.evaluation import (
    ModelSystem, evaluate_models, load_eval_config, run_eval_config, run_phase, write_report,
)
from recommender.interactions import load_interactions
from recommender.models import EASE
from recommender.splits import leave_last_out, random_split
from data.errors import ConfigFileError, ContractError
from tagging import put_tags, tag_row

YIWANG = Path(sys.executable).parent / "yiwang"


def community_rows(n_users=80, n_items=20, seed=0):
    """Two communities (users < n/2 on items 0..9, the rest on 10..19), each user 6-9 items over time."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        base = 0 if u < n_users // 2 else n_items // 2
        items = base + rng.choice(n_items // 2, rng.integers(6, 10), replace=False)
        for t, i in enumerate(items):
            rows.append((f"u{u}", f"m{i}", 1_700_000_000 + 86400 * t + u, int(rng.integers(1, 6))))
    return rows


@pytest.fixture
def csv_file(tmp_path) -> Path:
    rows = community_rows()
    rows += [rows[0], rows[1]]  # two duplicates
    rows += [("lonely", "m3", 1_700_000_000, 5)]  # a single-interaction user
    p = tmp_path / "inter.csv"
    pl.DataFrame(rows, schema=["user", "movie", "when", "stars"], orient="row").write_csv(p)
    return p


def test_load_by_name_and_index_with_counted_skips(csv_file, tmp_path):
    li = load_interactions(csv_file, user_col="user", item_col="movie", time_col="when", rating_col="stars")
    assert li.skips == {"duplicate user-item pairs (kept the latest)": 2, "single-interaction users": 1}
    assert li.frame.columns == ["subject_id", "item_id", "ts", "rating"]
    assert li.frame["ts"].dtype == pl.Datetime("us", "UTC") and "lonely" not in li.frame["subject_id"].to_list()
    # the same file without its header line, tab-separated, columns by index
    tsv = tmp_path / "inter.tsv"
    tsv.write_text("\n".join(line.replace(",", "\t") for line in csv_file.read_text().splitlines()[1:]) + "\n")
    li2 = load_interactions(tsv, header=False, user_col=0, item_col="1", time_col=2, rating_col=3, min_rating=3)
    raw = pl.read_csv(csv_file)
    assert li2.skips["ratings below 3"] == raw.filter(pl.col("stars") < 3).height > 0
    assert (li2.frame["rating"] >= 3).all() and li2.frame["subject_id"].is_in(raw["user"].implode()).all()


def test_loader_errors_name_file_and_column(csv_file, tmp_path):
    with pytest.raises(ContractError, match=r"inter.csv: unknown item column 'item'; columns: user, movie"):
        load_interactions(csv_file, user_col="user", item_col="item")
    with pytest.raises(ContractError, match="index 9 is out of range"):
        load_interactions(csv_file, user_col=9)
    with pytest.raises(ContractError, match="needs a rating column"):
        load_interactions(csv_file, user_col="user", item_col="movie", min_rating=4)
    bad = tmp_path / "bad.csv"
    bad.write_text("u,i,t\na,x,yesterday\nb,y,2026-01-02\n")
    with pytest.raises(ContractError, match="time column 't'.*'yesterday'"):
        load_interactions(bad, time_col="t")
    with pytest.raises(ContractError, match="no such file"):
        load_interactions(tmp_path / "absent.csv")
    one = tmp_path / "one.csv"
    one.write_text("u,i\na,x\nb,y\n")
    with pytest.raises(ContractError, match="no interactions left.*single-interaction users: 2"):
        load_interactions(one)


def test_harness_ranks_the_right_community_and_writes_reports(csv_file, tmp_path):
    li = load_interactions(csv_file, user_col="user", item_col="movie", time_col="when")
    split = random_split(li.frame, seed=3)
    users = li.frame["subject_id"].unique()
    groups = pl.DataFrame({"subject_id": users,
                           "group": np.where(users.str.slice(1).cast(pl.Int64) < 40, "first", "second")})
    rep = evaluate_models({"ease": {"l2": [1.0, 50.0]}, "pop": {}}, split, k=5, groups=groups)
    ease, pop = rep.results
    assert ease.params in ({"l2": 1.0}, {"l2": 50.0}) and len(ease.grid) == 2
    # every ease recommendation stays in the user's community, so it must beat popularity clearly
    assert ease.metrics["precision"] > pop.metrics["precision"] + 0.1
    assert set(rep.groups["group"]) == {"first", "second"} and "ndcg_vs_overall" in rep.groups.columns
    written = write_report(rep, tmp_path / "out")
    names = {p.name for p in written}
    assert {"results.md", "results.csv", "results_groups.csv", "results_metrics.png", "results_groups.png"} <= names
    csv = pl.read_csv(tmp_path / "out" / "results.csv")
    assert csv["system"].to_list() == ["ease", "pop"] and csv["ndcg"][0] == pytest.approx(ease.metrics["ndcg"])
    assert "| ease |" in (tmp_path / "out" / "results.md").read_text()


def test_a_system_that_recommends_seen_items_is_caught(csv_file):
    li = load_interactions(csv_file, user_col="user", item_col="movie", time_col="when")
    split = leave_last_out(li.frame)

    class Leaky:
        def fit(self, train):
            self.train = train
            return self

        def recommend(self, subject_ids, k, exclude=None):
            return self.train.filter(pl.col("subject_id").is_in(list(subject_ids))).with_columns(
                rank=pl.int_range(1, pl.len() + 1).over("subject_id")).filter(pl.col("rank") <= k)

    with pytest.raises(ContractError, match="excluded"):
        run_phase(Leaky(), split.train, split.test, split.train, 5, ["ndcg"], 20)
    m, pu, _, _ = run_phase(ModelSystem(EASE(l2=10.0)), split.train, split.test, split.train, 5, ["ndcg"], 20)
    assert pu.height == split.test["subject_id"].n_unique() and 0 < m["ndcg"] <= 1


def write_config(tmp_path, data_path, **over):
    cfg = {"data": {"interactions": str(data_path), "user_col": "user", "item_col": "movie", "time_col": "when"},
           "protocol": "leave-last-out", "k": 5, "metrics": ["ndcg", "hit", "coverage"],
           "models": {"ease": {"l2": 10.0}, "pop": {}}, "out": "out"}
    cfg.update(over)
    p = tmp_path / "eval.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"models": {"ease": {}, "lightgbm": {}}}, "models.lightgbm: unknown model 'lightgbm'"),
        ({"models": {"ease": {"lambda": 3}}}, "models.ease: .*unknown parameter.*lambda"),
        ({"metrics": ["ndcg", "auc"]}, "metrics: unknown metric 'auc'"),
        ({"protocol": "random"}, "protocol: unknown protocol 'random'"),
        ({"modles": {}}, "unknown key.*modles"),
        ({"k": 0}, "k: expected a positive integer"),
    ],
)
def test_config_errors_name_the_key(tmp_path, csv_file, over, message):
    with pytest.raises(ConfigFileError, match=message):
        load_eval_config(write_config(tmp_path, csv_file, **over))


def test_empty_test_window_is_an_error(tmp_path, csv_file):
    cfg = load_eval_config(write_config(tmp_path, csv_file, protocol="temporal", test_days=100_000))
    with pytest.raises(ContractError, match="empty train part"):
        run_eval_config(cfg)


def test_config_run_counts_skips(tmp_path, csv_file):
    run = run_eval_config(load_eval_config(write_config(tmp_path, csv_file)))
    notes = "\n".join(run.report.notes)
    assert "duplicate user-item pairs (kept the latest): 2" in notes and "single-interaction users: 1" in notes
    assert (tmp_path / "out" / "results.md").exists()
    assert [r.name for r in run.report.results] == ["ease", "pop"]


def _cli(*args, cwd):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    return subprocess.run([str(YIWANG), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def test_cli_with_flags_and_bad_model(tmp_path, csv_file):
    r = _cli("eval", "--interactions", str(csv_file), "--user-col", "user", "--item-col", "movie", "--time-col",
             "when", "--protocol", "leave-last-out", "--models", "ease,pop", "--k", "5", "--out", "res", "--json",
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "res" / "results.csv").exists() and '"system": "ease"' in r.stdout
    r = _cli("eval", "--interactions", str(csv_file), "--user-col", "uid", "--models", "ease,wals", cwd=tmp_path)
    assert r.returncode == 2 and "unknown model(s) wals" in r.stderr and "Traceback" not in r.stderr


# -- the store's own event log -----------------------------------------------------------------------------
def _store_events(settings, db):
    """Two communities of subjects over 300 days: views, then applications; each applies once more at the end."""
    from datetime import datetime, timedelta, timezone

    from data.eventlog import append_events

    rng = np.random.default_rng(1)
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    rows = []
    for u in range(80):
        base = 0 if u < 40 else 10
        items = base + rng.choice(10, 7, replace=False)
        for j, i in enumerate(items[:6]):
            day = int(rng.integers(0, 200))
            rows.append((f"P{u}", f"S{i}", "view", t0 + timedelta(days=day)))
            if j % 2 == 0:
                rows.append((f"P{u}", f"S{i}", "apply", t0 + timedelta(days=day + 1)))
        rows.append((f"P{u}", f"S{items[6]}", "complete", t0 + timedelta(days=int(rng.integers(260, 300)))))
    rows.append(("P0", "S0", "teleport", t0 + timedelta(days=10)))  # an action nobody configured a weight for
    df = pl.DataFrame(rows, schema={"subject_id": pl.String, "item_id": pl.String, "action": pl.String,
                                    "ts": pl.Datetime("us", "UTC")}, orient="row")
    df = df.with_columns(event_id=pl.int_range(pl.len()).cast(pl.String), channel=pl.lit("app"))
    append_events(settings.events_dir, df, 1)
    put_tags(db, [tag_row(f"P{u}", "crowd.elderly" if u % 2 else "crowd.non_local", date(2026, 1, 1),
                          as_of=date(2026, 11, 1), evidence_zh="", evidence_en="") for u in range(80)]
         + [tag_row("P3", "crowd.hardship", date(2026, 1, 1), sensitive=True, as_of=date(2026, 11, 1),
                    evidence_zh="", evidence_en="")])


def test_store_events_temporal_with_crowd_groups(settings, db, tmp_path):
    _store_events(settings, db)
    weights = {"view": 1.0, "click": 2.0, "favorite": 4.0, "consult": 4.0, "apply": 8.0, "complete": 8.0}
    cfg = {"_source": "city.yaml", "data": {"source": "events", "action_weights": weights, "half_life_days": 60},
           "protocol": "temporal", "test_days": 45, "k": 5, "groups": "crowd", "metrics": ["ndcg", "hit"],
           "models": {"ease": {"l2": 5.0}, "pop": {}}}
    with pytest.raises(ConfigFileError, match="no weight for action.*teleport"):
        run_eval_config(cfg, out_dir=tmp_path, settings=settings, db=db)
    cfg["data"]["action_weights"] = dict(weights, teleport=0.0)
    run = run_eval_config(cfg, out_dir=tmp_path, settings=settings, db=db)
    ease, pop = run.report.results
    assert ease.n_users == 80  # every subject completes one item in the test window
    assert ease.metrics["hit"] > pop.metrics["hit"] + 0.2
    groups = run.report.groups
    assert set(groups["group"]) == {"crowd.elderly", "crowd.non_local"}  # sensitive tags stay out
    assert groups.filter(pl.col("system") == "ease")["n_users"].sum() == 80
    assert (tmp_path / "results_groups.png").exists()


def test_store_events_errors(settings, db, tmp_path):
    from data.errors import StateError

    cfg = {"_source": "city.yaml", "data": {"source": "events", "action_weights": {"view": 1, "apply": 5, "complete": 5},
                                            "half_life_days": 30},
           "protocol": "temporal", "models": {"pop": {}}}
    with pytest.raises(StateError, match="no events"):
        run_eval_config(cfg, out_dir=tmp_path, settings=settings, db=db)
    with pytest.raises(ConfigFileError, match="needs the store"):
        run_eval_config(cfg, out_dir=tmp_path)
    with pytest.raises(ConfigFileError, match="data.relevant_actions"):
        run_eval_config(dict(cfg, data=dict(cfg["data"], relevant_actions=[])), settings=settings, db=db)
    with pytest.raises(ConfigFileError, match="only apply to data.source: events"):
        run_eval_config({"data": {"interactions": "x.csv", "relevant_actions": ["apply"]}, "models": {"pop": {}}})

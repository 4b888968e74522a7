"""Offline evaluation harness: run systems over a split, full ranking, metrics, per-group breakdown, reports.

A *system* is anything with ``fit(train_frame) -> self`` and
``recommend(subject_ids, k, exclude) -> DataFrame(subject_id, item_id, rank, score)`` (see :class:`System`).
:class:`ModelSystem` adapts any :mod:`recommender.models` model; the hybrid recommender plugs in the same way.

Ranking is over the full catalogue. For the test ranking each user's train *and* valid items are removed,
for the valid ranking the train items (RecBole's protocol). Hyperparameters are chosen on the valid split
(:func:`select_on_valid`), then the chosen configuration is measured on test. The test stage trains on
``split.test_train``: train for the random split (so the model fitted for the valid stage is reused as it is),
train + valid for the time-ordered splits (the test item is scored from everything before it, valid item
included, as in S3Rec/ICLRec and RecBole's sequential protocol), where the chosen setting is fitted once more.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Protocol, Sequence, runtime_checkable

import numpy as np
import polars as pl
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field, field_validator

from recommender.interactions import FORMATS
from recommender.metrics import METRICS, USER_METRICS, coverage, parse_metrics, per_user
from recommender.models import ImplicitModel, batch_topk, make_model, to_csr
from recommender.splits import Split
from data import yamlfile
from data.errors import ConfigFileError, ContractError

REC_SCHEMA = {"subject_id": pl.String, "item_id": pl.String, "rank": pl.Int64, "score": pl.Float64}


@runtime_checkable
class System(Protocol):
    """What the harness runs: fit on a train frame, then rank items for subjects."""

    def fit(self, train: pl.DataFrame) -> "System": ...

    def recommend(self, subject_ids: Sequence[str], k: int, exclude: pl.DataFrame | None = None) -> pl.DataFrame: ...


class ModelSystem:
    """A :mod:`recommender.models` model as a system over string ids.

    ``catalogue`` fixes the rankable items (default: the items seen in train); ``value`` names a train column
    holding confidences (default: every interaction weighs 1). Subjects unseen in train are scored from an
    empty history (item models give them nothing personal; factor models fold them in).
    """

    def __init__(self, model: ImplicitModel, catalogue: Sequence[str] | None = None, value: str | None = None,
                 chunk_size: int = 2048, filter_seen: bool = True):
        self.model = model
        self.catalogue = catalogue
        self.value = value
        self.chunk_size = chunk_size
        # False: only ``exclude`` is removed (a service viewed last month may well be applied for next month)
        self.filter_seen = filter_seen

    def fit(self, train: pl.DataFrame) -> "ModelSystem":
        items = (np.asarray(self.catalogue, dtype=object) if self.catalogue is not None
                 else np.sort(train["item_id"].cast(pl.String).unique().to_numpy()))
        users = np.sort(train["subject_id"].cast(pl.String).unique().to_numpy())
        self.interactions_ = to_csr(train, users, items, value=self.value)
        if self.interactions_.matrix.nnz == 0:
            raise ContractError("train part has no interaction on a catalogue item: nothing to fit")
        self.model.fit(self.interactions_.matrix)
        return self

    def _rows(self, subject_ids) -> tuple[np.ndarray, sp.csr_matrix, pl.DataFrame]:
        ia = self.interactions_
        q = pl.DataFrame({"subject_id": pl.Series(list(subject_ids), dtype=pl.String)})
        q = q.with_row_index("q").join(ia.subject_index(), on="subject_id", how="left").sort("q")
        rows = q["row"].fill_null(-1).to_numpy()
        known = rows >= 0
        # one history row per requested subject; unknown subjects get an empty row
        sel = sp.csr_matrix((len(rows), ia.matrix.shape[1]), dtype=np.float32)
        if known.any():
            pick = sp.csr_matrix((np.ones(known.sum(), dtype=np.float32),
                                  (np.flatnonzero(known), rows[known])), shape=(len(rows), ia.matrix.shape[0]))
            sel = (pick @ ia.matrix).tocsr()
        return rows, sel, q

    def recommend(self, subject_ids, k: int, exclude: pl.DataFrame | None = None) -> pl.DataFrame:
        subject_ids = list(subject_ids)
        rows, hist, q = self._rows(subject_ids)
        ex = None
        if exclude is not None and exclude.height:
            ex = to_csr(exclude.select("subject_id", "item_id"), np.asarray(subject_ids, dtype=object),
                        self.interactions_.item_ids).matrix
            ex.data[:] = 1.0
        items, scores = batch_topk(self.model, rows, hist, k, exclude=ex, chunk_size=self.chunk_size,
                                   filter_seen=self.filter_seen)
        n = len(subject_ids)
        flat = items.ravel()
        ok = flat >= 0
        return pl.DataFrame({
            "subject_id": pl.Series(np.repeat(np.asarray(subject_ids, dtype=object), k)[ok], dtype=pl.String),
            "item_id": pl.Series(self.interactions_.item_ids[flat[ok]], dtype=pl.String),
            "rank": np.tile(np.arange(1, k + 1, dtype=np.int64), n)[ok],
            "score": scores.ravel()[ok].astype(np.float64),
        }, schema=REC_SCHEMA)


@dataclass
class SystemResult:
    name: str
    params: dict
    metrics: dict[str, float]
    per_user: pl.DataFrame
    fit_s: float
    recommend_s: float
    n_users: int
    valid_metrics: dict[str, float] = field(default_factory=dict)
    grid: list[dict] = field(default_factory=list)  # [{params, valid metric}] when selected on valid
    warnings: list[str] = field(default_factory=list)  # e.g. the chosen value sits on the edge of its grid


@dataclass
class EvalReport:
    protocol: str
    k: int
    metrics: list[str]
    results: list[SystemResult]
    split_summary: dict[str, int]
    catalogue_size: int
    groups: pl.DataFrame | None = None  # per-group breakdown (system, group, n_users, metrics...)
    notes: list[str] = field(default_factory=list)

    def table(self) -> pl.DataFrame:
        rows = []
        for r in self.results:
            row = {"system": r.name, "params": _fmt_params(r.params), "users": r.n_users}
            row.update({m: r.metrics.get(m) for m in self.metrics})
            row.update({f"valid_{m}": r.valid_metrics.get(m) for m in self.metrics if r.valid_metrics})
            row.update({"fit_s": r.fit_s, "recommend_eval_s": r.recommend_s})
            rows.append(row)
        return pl.DataFrame(rows)


def _fmt_params(p: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in p.items())


def run_phase(system, train: pl.DataFrame, truth: pl.DataFrame, exclude: pl.DataFrame | None, k: int,
              metrics: list[str], catalogue_size: int, *, fit: bool = True) -> tuple[dict, pl.DataFrame, float, float]:
    """Fit on ``train`` (unless ``fit=False``), rank for the users in ``truth`` and score against it.

    Returns (metrics, per-user frame, fit seconds, recommend+metric seconds).
    """
    t0 = time.perf_counter()
    if fit:
        system.fit(train)
    t1 = time.perf_counter()
    users = truth["subject_id"].unique(maintain_order=True).sort().to_list()
    recs = system.recommend(users, k, exclude)
    missing = [c for c in ("subject_id", "item_id", "rank") if c not in recs.columns]
    if missing:
        raise ContractError(f"system {type(system).__name__}.recommend returned no column(s) {', '.join(missing)}")
    if exclude is not None and exclude.height:
        leaked = recs.join(exclude.select("subject_id", "item_id"), on=["subject_id", "item_id"], how="semi").height
        if leaked:
            raise ContractError(f"system {type(system).__name__} recommended {leaked} excluded (already seen) item(s)")
    pu = per_user(recs, truth, k)
    out = {m: float(pu[m].mean()) for m in metrics if m in USER_METRICS}
    if "coverage" in metrics:
        out["coverage"] = coverage(recs, k, catalogue_size)
    t2 = time.perf_counter()
    return {m: out[m] for m in metrics}, pu, t1 - t0, t2 - t1


def expand_grid(params: dict) -> list[dict]:
    """{a: [1, 2], b: 3} -> [{a: 1, b: 3}, {a: 2, b: 3}] (list values are grids, scalars fixed)."""
    keys = list(params)
    values = [v if isinstance(v, list) else [v] for v in params.values()]
    for k, v in zip(keys, values):
        if not v:
            raise ConfigFileError(f"parameter {k!r}: empty list of values")
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def select_on_valid(make_system: Callable[[dict], object], grid: list[dict], split: Split, k: int,
                    metric: str, catalogue_size: int, *, exclude: pl.DataFrame | None = None
                    ) -> tuple[dict, list[dict], dict, object]:
    """Fit each grid point on train, rank valid users with train items removed; best by ``metric``.

    Returns (best params, [{params, metric, fit_s}] for every point, best point's valid metrics, best point's
    fitted system). Only the best fitted system is kept, so memory holds at most two fitted models.
    """
    if split.valid.height == 0:
        raise ContractError("hyperparameter selection needs a valid part, and it is empty "
                            "(give a valid window, e.g. --valid-days / valid_days, or single parameter values)")
    rows, best, best_val, best_metrics, best_system = [], None, -np.inf, {}, None
    all_metrics = [m for m in METRICS]
    for params in grid:
        system = make_system(params)
        vm, _, fit_s, _ = run_phase(system, split.train, split.valid,
                                    split.train.select("subject_id", "item_id") if exclude is None else exclude,
                                    k, all_metrics, catalogue_size)
        rows.append({"params": params, metric: vm[metric], "fit_s": fit_s})
        if vm[metric] > best_val:
            best, best_val, best_metrics, best_system = params, vm[metric], vm, system
    return best, rows, best_metrics, best_system


def grid_edge_warnings(label: str, grid: list[dict], best: dict) -> list[str]:
    """One line per numeric parameter whose chosen value is the smallest or largest of 3+ tried values."""
    out = []
    for key, chosen in best.items():
        values = sorted({g[key] for g in grid if isinstance(g[key], (int, float)) and not isinstance(g[key], bool)})
        if len(values) < 3 or chosen not in values or values[0] < chosen < values[-1]:
            continue
        side = "smallest" if chosen == values[0] else "largest"
        out.append(f"{label}: the chosen {key}={chosen} is the {side} value of its grid ({values[0]}..{values[-1]}), "
                   f"on the grid's edge: the best setting may lie beyond it; widen the grid")
    return out


def evaluate_models(models: dict[str, dict], split: Split, *, k: int = 10, metrics=METRICS,
                    select_metric: str = "mrr", catalogue: Sequence[str] | None = None,
                    groups: pl.DataFrame | None = None, systems: dict[str, object] | None = None,
                    progress: Callable[[str], None] | None = None, value: str | None = None,
                    filter_seen: bool = True,
                    exclude_valid: pl.DataFrame | None = None,
                    exclude_test: pl.DataFrame | None = None) -> EvalReport:
    """Evaluate named models (``{label: {"model": name, **params-or-grids}}``) and ready-made systems.

    Models with a grid (any list-valued parameter) are tuned on valid ``select_metric``@k first.
    ``catalogue`` defaults to every item in the split. ``groups`` (subject_id, group) adds a per-group table.
    ``value`` names the train column of confidences. The items removed from each user's ranking default to
    their train items (valid ranking) and train + valid items (test ranking); ``exclude_*`` replace them.
    """
    metrics = parse_metrics(metrics)
    select_metric = parse_metrics([select_metric], source="select_metric")[0]
    if select_metric not in USER_METRICS:
        raise ConfigFileError(f"select_metric: {select_metric!r} is not a per-user metric")
    if catalogue is None:
        catalogue = np.sort(pl.concat([split.train["item_id"], split.valid["item_id"], split.test["item_id"]])
                            .cast(pl.String).unique().to_numpy())
    catalogue = np.asarray(catalogue, dtype=object)
    n_cat = len(catalogue)
    seen_valid = split.train.select("subject_id", "item_id") if exclude_valid is None else exclude_valid
    test_train = split.test_train
    # the model fitted for the valid stage serves the test stage when both train on the same frame
    same_train = test_train is split.train
    seen_test = (pl.concat([test_train.select("subject_id", "item_id"), split.valid.select("subject_id", "item_id")])
                 .unique(maintain_order=True) if exclude_test is None else exclude_test)
    results, notes = [], []
    for label, spec in models.items():
        spec = dict(spec or {})
        name = spec.pop("model", label)
        make_model(name)  # unknown name -> ConfigFileError naming it, before any work
        grid = expand_grid(spec)
        for params in grid:
            make_model(name, **params)  # unknown parameter -> ConfigFileError naming it

        def factory(params, _name=name):
            return ModelSystem(make_model(_name, **params), catalogue=catalogue, value=value, filter_seen=filter_seen)

        grid_rows, valid_metrics, fitted, fitted_s, warnings = [], {}, None, 0.0, []
        if len(grid) > 1:
            if progress:
                progress(f"{label}: choosing among {len(grid)} settings on valid {select_metric}@{k}")
            best, grid_rows, valid_metrics, fitted = select_on_valid(factory, grid, split, k, select_metric, n_cat,
                                                                     exclude=seen_valid)
            fitted_s = next(r["fit_s"] for r in grid_rows if r["params"] is best)
            valid_metrics = {m: valid_metrics[m] for m in metrics if m in valid_metrics}
            warnings = grid_edge_warnings(label, grid, best)
        else:
            best = grid[0]
            if split.valid.height:
                fitted = factory(best)
                vm, _, fitted_s, _ = run_phase(fitted, split.train, split.valid, seen_valid, k, list(METRICS), n_cat)
                valid_metrics = {m: vm[m] for m in metrics}
        if same_train and fitted is not None:
            if progress:
                progress(f"{label}: rank test users with the model fitted on train")
            m, pu, _, rec_s = run_phase(fitted, test_train, split.test, seen_test, k, metrics, n_cat, fit=False)
            fit_s = fitted_s
        else:
            if progress:
                progress(f"{label}: fit on {'train' if same_train else 'train + valid'}, rank test users")
            m, pu, fit_s, rec_s = run_phase(factory(best), test_train, split.test, seen_test, k, metrics, n_cat)
        results.append(SystemResult(label, best, m, pu, fit_s, rec_s, pu.height, valid_metrics, grid_rows, warnings))
        notes += [f"warning: {w}" for w in warnings]
    for label, system in (systems or {}).items():
        if progress:
            progress(f"{label}: fit on {'train' if same_train else 'train + valid'}, rank test users")
        m, pu, fit_s, rec_s = run_phase(system, test_train, split.test, seen_test, k, metrics, n_cat)
        results.append(SystemResult(label, {}, m, pu, fit_s, rec_s, pu.height))
    report = EvalReport(split.protocol, k, metrics, results, split.summary(), n_cat, notes=notes)
    if groups is not None:
        report.groups = group_breakdown(results, groups, [m for m in metrics if m in USER_METRICS])
    return report


def group_breakdown(results: list[SystemResult], groups: pl.DataFrame, metrics: list[str]) -> pl.DataFrame:
    """Mean per-user metrics per group (a subject may sit in several groups) and each group's ratio to overall."""
    missing = [c for c in ("subject_id", "group") if c not in groups.columns]
    if missing:
        raise ContractError(f"groups frame: missing column(s) {', '.join(missing)} (need subject_id, group)")
    g = groups.select(pl.col("subject_id").cast(pl.String), pl.col("group").cast(pl.String)).unique()
    frames = []
    for r in results:
        j = r.per_user.join(g, on="subject_id", how="inner")
        agg = j.group_by("group").agg(n_users=pl.len(), **{m: pl.col(m).mean() for m in metrics})
        # the fairness figure: each group's NDCG (else first metric) as a share of the overall figure
        ref = "ndcg" if "ndcg" in metrics else metrics[0]
        overall = r.metrics[ref]
        agg = agg.with_columns((pl.col(ref) / overall if overall else pl.lit(None, dtype=pl.Float64))
                               .alias(f"{ref}_vs_overall"))
        frames.append(agg.with_columns(system=pl.lit(r.name)).sort("group"))
    return pl.concat(frames, how="diagonal_relaxed").select("system", "group", pl.exclude("system", "group"))


# -- reports ---------------------------------------------------------------------------------------
def _md_table(df: pl.DataFrame, floatfmt: str = "{:.4f}") -> str:
    def cell(v):
        if v is None:
            return ""
        if isinstance(v, float):
            return floatfmt.format(v)
        return str(v)

    head = "| " + " | ".join(df.columns) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.iter_rows()]
    return "\n".join([head, sep, *body])


def write_report(report: EvalReport, out_dir, *, title: str = "Evaluation", stem: str = "results",
                 extra_md: str = "", plots: bool = True) -> list[Path]:
    """Write ``<stem>.md``, ``<stem>.csv`` (and ``<stem>_groups.csv``) and PNG bar plots to ``out_dir``.

    Without matplotlib (the optional ``plots`` extra) the tables are written all the same, and a note in the
    report (so in ``<stem>.md`` and the CLI's output) says the plots were not drawn and how to get them.
    """
    plt = _pyplot() if plots else None
    if plots and plt is None and PLOTS_MISSING not in report.notes:
        report.notes.append(PLOTS_MISSING)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    table = report.table()
    csv_path = out / f"{stem}.csv"
    table.write_csv(csv_path)
    written.append(csv_path)
    lines = [f"# {title}", "", f"Protocol: **{report.protocol}**, full ranking over {report.catalogue_size} items, "
             f"K = {report.k}. Test metrics are means over test users; `valid_*` are the chosen setting's valid "
             "figures.", ""]
    lines += ["Split: " + ", ".join(f"{k} {v:,}" for k, v in report.split_summary.items()), ""]
    show = table.select([c for c in table.columns if not c.startswith("valid_")])
    lines += [_md_table(show), ""]
    if any(r.valid_metrics for r in report.results):
        lines += ["Valid (the split hyperparameters were chosen on):", "",
                  _md_table(table.select(["system"] + [c for c in table.columns if c.startswith("valid_")])), ""]
    for r in report.results:
        if r.grid:
            metric = [c for c in r.grid[0] if c not in ("params", "fit_s")][0]
            g = pl.DataFrame({"params": [_fmt_params(x["params"]) for x in r.grid],
                              f"valid {metric}@{report.k}": [x[metric] for x in r.grid],
                              "fit_s": [x["fit_s"] for x in r.grid]})
            lines += [f"Grid for {r.name}:", "", _md_table(g), ""]
    if report.groups is not None:
        gpath = out / f"{stem}_groups.csv"
        report.groups.write_csv(gpath)
        written.append(gpath)
        lines += ["Per group:", "", _md_table(report.groups), ""]
    for n in report.notes:
        lines.append(f"- {n}")
    if extra_md:
        lines += ["", extra_md]
    md = out / f"{stem}.md"
    md.write_text("\n".join(lines).rstrip() + "\n")
    written.append(md)
    if plt is not None:
        written += _plots(plt, report, out, stem)
    return written


PLOTS_MISSING = "plots: not drawn, matplotlib is not installed (install yiwang[plots] for plots)"


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend, or None where the optional dependency is absent."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plots(plt, report: EvalReport, out: Path, stem: str) -> list[Path]:
    paths = []
    names = [r.name for r in report.results]
    ms = report.metrics
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(ms) * max(1, len(names)) / 2), 4))
    width = 0.8 / max(1, len(names))
    x = np.arange(len(ms))
    for i, r in enumerate(report.results):
        ax.bar(x + i * width, [r.metrics[m] for m in ms], width, label=r.name)
    ax.set_xticks(x + width * (len(names) - 1) / 2, [f"{m}@{report.k}" for m in ms])
    ax.set_ylabel("test")
    ax.set_title(f"{report.protocol}: test metrics")
    ax.legend(fontsize="small")
    fig.tight_layout()
    p = out / f"{stem}_metrics.png"
    fig.savefig(p, dpi=100)
    plt.close(fig)
    paths.append(p)
    if report.groups is not None and "ndcg" in report.groups.columns:
        g = report.groups
        groups = sorted(g["group"].unique().to_list())
        fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(groups) * max(1, len(names)) / 2), 4))
        x = np.arange(len(groups))
        for i, name in enumerate(names):
            sub = {row["group"]: row["ndcg"] for row in g.filter(pl.col("system") == name).iter_rows(named=True)}
            ax.bar(x + i * width, [sub.get(gr, 0.0) or 0.0 for gr in groups], width, label=name)
        ax.set_xticks(x + width * (len(names) - 1) / 2, groups, rotation=30, ha="right")
        ax.set_ylabel(f"NDCG@{report.k}")
        ax.set_title("NDCG per group")
        ax.legend(fontsize="small")
        fig.tight_layout()
        p = out / f"{stem}_groups.png"
        fig.savefig(p, dpi=100)
        plt.close(fig)
        paths.append(p)
    return paths


# -- configuration-driven runs (``yiwang eval CONFIG`` and ``yiwang eval --interactions FILE``) --------------
PROTOCOLS = ("recbole-random", "leave-last-out", "temporal")
GROUP_SOURCES = ("crowd",)


class _ConfigSection(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EvalData(_ConfigSection):
    """``data:``: an interaction file (``interactions``: FILE and how to read it) or the store's events."""

    source: Literal["file", "events"] = "file"
    # an interaction file
    interactions: str | None = None
    format: str | None = None
    sep: str | None = None
    header: bool | None = None
    user_col: str | int | None = None
    item_col: str | int | None = None
    time_col: str | int | None = None
    rating_col: str | int | None = None
    min_rating: float | None = None
    # the store's events (checked against the actions in use when the run reads them)
    relevant_actions: list[str] | None = Field(default=None, min_length=1)
    exclude_actions: list[str] | None = Field(default=None, min_length=1)
    action_weights: dict[str, Any] | None = None
    half_life_days: Any = None

    @field_validator("format")
    @classmethod
    def _format(cls, v):
        if v is not None and v not in FORMATS:
            raise ValueError(f"expected one of {', '.join(FORMATS)}, got {v!r}")
        return v


class EvalConfigFile(_ConfigSection):
    """An eval config (``yiwang eval CONFIG``, experiments/*.yaml)."""

    title: str | None = None
    data: EvalData
    protocol: str | None = None  # default: recbole-random for a file, temporal for the store's events
    seed: int | None = None
    k: Any = 10
    metrics: list[str] | str | None = None
    select_metric: str | None = None
    models: dict[str, dict[str, Any] | None] = Field(min_length=1)
    groups: str | None = None
    out: str | None = None
    ratios: list[float] | None = None
    test_days: int | None = None
    valid_days: int | None = None
    test_fraction: float | None = None
    valid_fraction: float | None = None

    @field_validator("protocol")
    @classmethod
    def _protocol(cls, v):
        if v is not None and v not in PROTOCOLS:
            raise ValueError(f"unknown protocol {v!r}; known: {', '.join(PROTOCOLS)}")
        return v

    @field_validator("k")
    @classmethod
    def _k(cls, v):
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"expected a positive integer, got {v!r}")
        return v

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, v):
        return v if v is None else _known_metrics(v)

    @field_validator("select_metric")
    @classmethod
    def _select_metric(cls, v):
        return v if v is None else _known_metrics([v])[0]


def _known_metrics(names):
    try:
        parse_metrics(names, source="")
    except ConfigFileError as exc:
        raise ValueError(str(exc).removeprefix(": ")) from None
    return names


CONFIG_KEYS = set(EvalConfigFile.model_fields)
DATA_KEYS = set(EvalData.model_fields)
EVENT_DATA_KEYS = {"source", "relevant_actions", "exclude_actions", "action_weights", "half_life_days"}

#: grids used when models are named on the command line (chosen on valid MRR@10 when the split has a valid part).
#: Log-spaced and wide enough that the usual winners on public datasets (EASE l2 from tens on sparse sequential
#: data to ~500 on MovieLens) fall inside; a winner on an edge is reported (see :func:`grid_edge_warnings`).
DEFAULT_GRIDS: dict[str, dict] = {
    "pop": {},
    "itemknn": {"neighbours": [10, 25, 50, 100, 200, 400]},
    "ease": {"l2": [10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0]},
    "als": {"factors": [32, 64, 128], "regularization": [0.1, 1.0, 10.0, 100.0], "alpha": 1.0},
    "bpr": {"factors": [64], "learning_rate": [0.01], "iterations": [25, 50, 100, 200]},
}


@dataclass
class EvalRun:
    report: EvalReport
    written: list[Path]
    load_skips: dict[str, int]
    seconds: float


def load_eval_config(path) -> dict:
    """Read and check an eval config (YAML); unknown keys, models or metrics are errors naming them and their line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigFileError(f"{path}: no such config file")
    doc = yamlfile.read(path, error=ConfigFileError, style=yamlfile.key_style)
    if not isinstance(doc.data, dict):
        raise ConfigFileError(f"{path}: expected a mapping at the top level")
    cfg = dict(doc.data)
    cfg["_source"] = str(path)
    cfg["_base"] = path.parent
    return check_eval_config(cfg, doc)


def check_eval_config(cfg: dict, doc: yamlfile.Document | None = None) -> dict:
    """Check a config (from a file, with ``doc`` locating its lines, or built by the CLI); returns it unchanged.

    Keys starting with ``_`` are the caller's (``_source``: the file named in errors, ``_base``: its folder).
    """
    source = cfg.get("_source", "<config>")
    if doc is None:
        doc = yamlfile.Document.from_data({k: v for k, v in cfg.items() if not str(k).startswith("_")}, source)

    def fail(path: tuple, msg: str, field: tuple | None = None):
        raise ConfigFileError(yamlfile.where(doc, path, style=yamlfile.key_style, field=field) + msg)

    checked = yamlfile.validate(EvalConfigFile, doc, error=ConfigFileError, style=yamlfile.key_style)
    data = checked.data
    if data.source == "events":
        if checked.protocol not in (None, "temporal"):
            fail(("protocol",), "the store's events are evaluated with 'temporal'")
    else:
        if data.interactions is None:
            fail(("data", "interactions"), "required (the interaction file to evaluate on)")
        stray = sorted(k for k in data.model_fields_set if k in EVENT_DATA_KEYS - {"source"})
        if stray:
            fail(("data", stray[0]), f"data.{', data.'.join(stray)} only apply to data.source: events", field=())
    for label, spec in checked.models.items():
        spec = dict(spec or {})
        name = spec.pop("model", label)
        try:
            for params in expand_grid(spec):
                make_model(name, **params)
        except ConfigFileError as exc:
            fail(("models", label), str(exc))
    return cfg


def _resolve_path(cfg: dict, value) -> Path:
    p = Path(str(value)).expanduser()
    return p if p.is_absolute() else Path(cfg.get("_base", ".")) / p


def _events_split(cfg: dict, settings) -> tuple[Split, np.ndarray, pl.DataFrame, pl.DataFrame, list[str]]:
    """The store's event log as a temporal split: weighted train pairs, relevant valid/test pairs.

    Returns (split with a ``w`` column in train, catalogue, valid exclusions, test exclusions, notes).
    """
    from recommender.models.weights import check_action_weights, weighted_interactions
    from recommender.splits import temporal_split
    from data.eventlog import scan_events
    from data.registry import scan_table

    source = cfg.get("_source", "<config>")
    data = cfg["data"]
    if settings is None:
        raise ConfigFileError(f"{source}: data.source: events needs the store (run through `yiwang --home HOME eval`)")
    weights, half_life = data.get("action_weights"), data.get("half_life_days")
    if weights is None or "half_life_days" not in data:
        from recommender.config import load_config

        rc = load_config(settings)
        weights = rc.action_weights if weights is None else weights
        half_life = rc["interactions"]["half_life_days"] if "half_life_days" not in data else half_life
    check_action_weights(weights, half_life, source=f"{source}: data.action_weights")
    relevant = list(data.get("relevant_actions", ["apply", "complete"]))
    excluded = list(data.get("exclude_actions", relevant))
    unknown = sorted(set(relevant + excluded) - set(weights))
    if unknown:
        raise ConfigFileError(f"{source}: data.relevant_actions/exclude_actions: unknown action(s) {', '.join(unknown)}; "
                              f"known: {', '.join(weights)}")
    events = scan_events(settings.events_dir).select("subject_id", "item_id", "action", "ts").collect()
    if events.height == 0:
        from data.errors import StateError

        raise StateError(f"no events in {settings.events_dir}: ingest an export first (`yiwang ingest`)")
    raw = temporal_split(events, int(cfg.get("test_days", 60)), int(cfg.get("valid_days", 0)))
    train_end = raw.train["ts"].max()
    ia = weighted_interactions(raw.train, weights, half_life, train_end)
    coo = ia.matrix.tocoo()
    train = pl.DataFrame({"subject_id": pl.Series(ia.subject_ids[coo.row], dtype=pl.String),
                          "item_id": pl.Series(ia.item_ids[coo.col], dtype=pl.String), "w": coo.data})

    def pairs(df: pl.DataFrame, actions: list[str]) -> pl.DataFrame:
        return df.filter(pl.col("action").is_in(actions)).select("subject_id", "item_id").unique()

    excl_valid = pairs(raw.train, excluded)
    excl_test = pl.concat([excl_valid, pairs(raw.valid, excluded)]).unique()
    notes, skips = [], dict(raw.skips)
    parts = {}
    for name, part, excl in (("valid", raw.valid, excl_valid), ("test", raw.test, excl_test)):
        truth = pairs(part, relevant)
        repeat = truth.join(excl, on=["subject_id", "item_id"], how="semi").height
        if repeat:
            skips[f"{name} pairs already {'/'.join(excluded)} before (removed from ranking, so not scored)"] = repeat
        parts[name] = truth.join(excl, on=["subject_id", "item_id"], how="anti")
        new_users = parts[name].join(train.select("subject_id").unique(), on="subject_id", how="anti")
        if new_users.height:
            notes.append(f"{name}: {new_users['subject_id'].n_unique():,} subject(s) with no train history "
                         "(kept: they get the models' non-personal answer)")
    if parts["test"].height == 0:
        raise ContractError(f"temporal split: no {'/'.join(relevant)} event in the last {cfg.get('test_days', 60)} "
                            "day(s) that was not already done before: nothing to evaluate")
    catalogue = scan_table(settings.home, "catalog").select("item_id").collect()["item_id"]
    catalogue = np.sort(pl.concat([catalogue, events["item_id"]]).unique().to_numpy())
    notes.insert(0, f"data: the store's events ({events.height:,}); train until {train_end}, "
                    f"{raw.notes.get('test_start')} onwards is test; relevant: {', '.join(relevant)}; "
                    f"removed from rankings: items {'/'.join(excluded)} before; weights {weights}, "
                    f"half-life {half_life} days")
    test_history = None
    if raw.valid.height:
        # the test stage learns from everything before the test window, valid window included
        hist = weighted_interactions(pl.concat([raw.train, raw.valid]), weights, half_life, raw.valid["ts"].max())
        hcoo = hist.matrix.tocoo()
        test_history = pl.DataFrame({"subject_id": pl.Series(hist.subject_ids[hcoo.row], dtype=pl.String),
                                     "item_id": pl.Series(hist.item_ids[hcoo.col], dtype=pl.String),
                                     "w": hcoo.data})
    split = Split(train, parts["valid"], parts["test"], "temporal", skips, raw.notes, test_history)
    return split, catalogue, excl_valid, excl_test, notes


def crowd_groups(settings, db) -> pl.DataFrame:
    """subject -> group for the fairness breakdown: person/enterprise, non-sensitive crowd tags, students."""
    from data.registry import scan_table

    people = scan_table(settings.home, "people").select(pl.col("person_id").alias("subject_id")).collect()
    ents = scan_table(settings.home, "enterprises").select(pl.col("enterprise_id").alias("subject_id")).collect()
    from taggers.store import group_tags

    tags = group_tags(db.conn)
    return pl.concat([
        people.with_columns(group=pl.lit("person")), ents.with_columns(group=pl.lit("enterprise")), tags,
    ]).unique()


def run_eval_config(cfg: dict, *, out_dir=None, progress: Callable[[str], None] | None = None,
                    systems: dict[str, object] | None = None, write: bool = True, settings=None,
                    db=None) -> EvalRun:
    """Load the data, split it by the named protocol, evaluate every model, write the reports.

    ``settings``/``db`` are needed only for ``data.source: events`` and ``groups: crowd``.
    """
    from recommender.interactions import load_interactions
    from recommender.splits import drop_cold, leave_last_out, random_split, temporal_split

    t0 = time.perf_counter()
    cfg = check_eval_config(cfg)
    data = cfg["data"]
    if data.get("source") == "events":
        split, catalogue, excl_valid, excl_test, notes = _events_split(cfg, settings)
        groups = None
        if cfg.get("groups") == "crowd":
            if db is None:
                raise ConfigFileError(f"{cfg.get('_source', '<config>')}: groups: crowd needs the store")
            groups = crowd_groups(settings, db)
        elif cfg.get("groups"):
            groups = _groups_file(cfg)
        report = evaluate_models(
            cfg["models"], split, k=int(cfg.get("k", 10)), metrics=cfg.get("metrics", list(METRICS)),
            select_metric=cfg.get("select_metric", "mrr"), catalogue=catalogue, groups=groups, systems=systems,
            progress=progress, value="w", filter_seen=False, exclude_valid=excl_valid, exclude_test=excl_test,
        )
        report.notes = notes + [f"skipped: {k}: {v:,}" for k, v in split.skips.items()] + report.notes
        return _finish(cfg, report, out_dir, write, {}, t0, "the store's events")
    path = _resolve_path(cfg, data["interactions"])
    protocol = cfg.get("protocol", "recbole-random")
    source = cfg.get("_source", "<config>")
    fmt = data.get("format")
    if fmt is None:
        from recommender.interactions import detect_format

        fmt = detect_format(path, data.get("sep"))
        detected = fmt == "sequences"
    else:
        detected = False
    if fmt == "sequences" and protocol == "temporal":
        raise ConfigFileError(f"{source}: protocol 'temporal' needs dates, and a sequence file only orders each "
                              "user's items: use leave-last-out (or recbole-random)")
    if protocol != "recbole-random" and data.get("time_col") in (None, "") and fmt != "sequences":
        hint = " (or data.format: sequences / --format sequences for a one-user-per-line file)"
        raise ConfigFileError(f"{source}: data.time_col: protocol {protocol!r} needs a time column{hint}")
    loaded = load_interactions(
        path, format=fmt, sep=data.get("sep"), header=data.get("header"), user_col=data.get("user_col", 0),
        item_col=data.get("item_col", 1), time_col=data.get("time_col"), rating_col=data.get("rating_col"),
        min_rating=data.get("min_rating"),
    )
    df = loaded.frame
    notes = [f"data: {path} ({loaded.rows_read:,} {'lines' if loaded.format == 'sequences' else 'rows'} read, "
             f"{df.height:,} interactions kept, {df['subject_id'].n_unique():,} users, "
             f"{df['item_id'].n_unique():,} items)"]
    if loaded.format == "sequences":
        notes.append("data read as sequences: one user per line, items in time order (the order gives the time)"
                     + ("; detected from lines of different lengths" if detected else ""))
    notes += [f"skipped on load: {k}: {v:,}" for k, v in loaded.skips.items()]
    notes.append(f"BLAS threads: {blas_threads()}")
    seed = int(cfg.get("seed", 2020))
    if protocol == "recbole-random":
        split = random_split(df, tuple(cfg.get("ratios", (0.8, 0.1, 0.1))), seed=seed)
        items = split.train["item_id"].unique().implode()
        cold = split.test.filter(~pl.col("item_id").is_in(items)).height
        if cold:
            notes.append(f"test interactions on items absent from train: {cold:,} (kept and unrankable, as RecBole does)")
    elif protocol == "leave-last-out":
        split = drop_cold(leave_last_out(df))
    else:
        windows = {k: cfg[k] for k in ("test_days", "valid_days") if cfg.get(k) is not None}
        fractions = {k: cfg[k] for k in ("test_fraction", "valid_fraction") if cfg.get(k) is not None}
        if windows and fractions:
            raise ConfigFileError(f"{source}: give test_days/valid_days or test_fraction/valid_fraction, not both")
        split = drop_cold(temporal_split(df, **windows, **fractions))
        notes.append(f"temporal cut: valid from {split.notes['valid_start']}, test from {split.notes['test_start']}")
    if split.test_history is not None:
        notes.append("test stage: each model is fitted on train + valid and ranks from that history, so the test "
                     "interaction is scored from everything before it (the valid interaction included)")
    groups = _groups_file(cfg) if cfg.get("groups") else None
    report = evaluate_models(
        cfg["models"], split, k=int(cfg.get("k", 10)), metrics=cfg.get("metrics", list(METRICS)),
        select_metric=cfg.get("select_metric", "mrr"), catalogue=np.sort(df["item_id"].unique().to_numpy()),
        groups=groups, systems=systems, progress=progress,
    )
    report.notes = notes + [f"skipped by the split: {k}: {v:,}" for k, v in split.skips.items()] + report.notes
    return _finish(cfg, report, out_dir, write, loaded.skips, t0, path.name)


def blas_threads() -> int:
    """Threads the loaded BLAS libraries use (the largest, when numpy and scipy bring their own)."""
    import scipy.linalg  # noqa: F401  (loads scipy's BLAS, the one EASE's inversion runs on)
    from threadpoolctl import threadpool_info

    return max([int(a["num_threads"]) for a in threadpool_info() if a.get("user_api") == "blas"] or [1])


def _groups_file(cfg: dict) -> pl.DataFrame:
    from recommender.interactions import load_interactions

    if cfg["groups"] in GROUP_SOURCES:
        raise ConfigFileError(f"{cfg.get('_source', '<config>')}: groups: {cfg['groups']!r} needs data.source: events")
    gpath = _resolve_path(cfg, cfg["groups"])
    g = load_interactions(gpath, user_col="subject_id", item_col="group", min_user_interactions=1)
    return g.frame.select("subject_id", pl.col("item_id").alias("group"))


def _finish(cfg, report, out_dir, write, load_skips, t0, what) -> EvalRun:
    out = Path(out_dir) if out_dir is not None else (_resolve_path(cfg, cfg["out"]) if cfg.get("out") else None)
    written = []
    if write:
        if out is None:
            raise ConfigFileError(f"{cfg.get('_source', '<config>')}: out: no output directory given (config key out or --out)")
        written = write_report(report, out, title=cfg.get("title", f"Evaluation on {what}"))
    return EvalRun(report, written, load_skips, time.perf_counter() - t0)

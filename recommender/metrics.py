"""Top-K ranking metrics, defined exactly as protocol 1 of ../shared/datasets/BENCHMARKS.md (RecBole's).

Per user with at least one relevant (test) item, binary relevance, then averaged over those users:

- Recall@K    = hits in top K / |relevant items of user|
- Precision@K = hits in top K / K
- Hit@K       = 1 if any hit in top K
- MRR@K       = 1 / rank of the first hit (0 if none)
- NDCG@K      = DCG / IDCG, gains 1/log2(rank+1), IDCG over min(|relevant|, K) ideal positions
- MAP@K       = sum over hit ranks r of precision@r, divided by min(|relevant|, K) (RecBole's MAP)
- coverage@K  = distinct items recommended in anyone's top K / catalogue size (a system-level figure)

Users with no relevant item are not averaged in (and are counted by the caller, never scored as zero).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from data.errors import ConfigFileError, ContractError

#: per-user metrics (averaged over users) and their column names
USER_METRICS = ("recall", "precision", "hit", "mrr", "ndcg", "map")
#: system-level metrics
SYSTEM_METRICS = ("coverage",)
METRICS = USER_METRICS + SYSTEM_METRICS
ALIASES = {"hitrate": "hit", "hit_rate": "hit", "hr": "hit"}


def parse_metrics(names, *, source: str = "metrics") -> list[str]:
    """Normalise metric names from configuration; an unknown one is a ConfigFileError naming it."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if not names:
        raise ConfigFileError(f"{source}: no metrics given; known: {', '.join(METRICS)}")
    out = []
    for raw in names:
        n = str(raw).strip().lower().split("@")[0]
        n = ALIASES.get(n, n)
        if n not in METRICS:
            raise ConfigFileError(f"{source}: unknown metric {raw!r}; known: {', '.join(METRICS)}")
        if n not in out:
            out.append(n)
    return out


def _idcg_table(k: int) -> np.ndarray:
    """idcg[n] for n = 0..k relevant items (idcg[0] = 0, never used as a divisor)."""
    return np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))])


def per_user(recs: pl.DataFrame, truth: pl.DataFrame, k: int) -> pl.DataFrame:
    """One row per user in ``truth``: n_relevant, n_hits and every metric of :data:`USER_METRICS` at ``k``.

    ``recs`` has subject_id, item_id, rank (1 = best; ranks beyond k are ignored); ``truth`` has subject_id,
    item_id (duplicates ignored). Users in ``truth`` that got no recommendation score 0 (they were asked for
    and nothing came back; that is the system's fault, not a skipped user).
    """
    if not isinstance(k, int) or k <= 0:
        raise ContractError(f"k must be a positive integer, got {k!r}")
    for name, frame, cols in (("recommendations", recs, ("subject_id", "item_id", "rank")),
                              ("truth", truth, ("subject_id", "item_id"))):
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise ContractError(f"{name} frame: missing column(s) {', '.join(missing)}")
    truth = truth.select(pl.col("subject_id").cast(pl.String), pl.col("item_id").cast(pl.String)).unique()
    top = recs.select(pl.col("subject_id").cast(pl.String), pl.col("item_id").cast(pl.String),
                      pl.col("rank").cast(pl.Int64)).filter(pl.col("rank") <= k)
    dup = top.select(pl.struct("subject_id", "item_id").is_duplicated().any()).item()
    if dup:
        raise ContractError("recommendations frame: an item appears twice in one subject's top K")
    hits = (
        top.join(truth, on=["subject_id", "item_id"], how="semi")
        .sort("subject_id", "rank")
        .with_columns(n_before=pl.int_range(1, pl.len() + 1).over("subject_id"))
        .group_by("subject_id")
        .agg(
            n_hits=pl.len(),
            first=pl.col("rank").min(),
            dcg=(1.0 / (pl.col("rank") + 1).cast(pl.Float64).log(2)).sum(),
            ap=(pl.col("n_before") / pl.col("rank")).sum(),
        )
    )
    users = truth.group_by("subject_id").agg(n_relevant=pl.len())
    df = users.join(hits, on="subject_id", how="left").with_columns(
        pl.col("n_hits").fill_null(0), pl.col("dcg").fill_null(0.0), pl.col("ap").fill_null(0.0)
    ).sort("subject_id")
    n_rel = df["n_relevant"].to_numpy().astype(np.float64)
    n_hits = df["n_hits"].to_numpy().astype(np.float64)
    first = df["first"].fill_null(0).to_numpy().astype(np.float64)
    ideal = np.minimum(n_rel, k).astype(np.int64)
    idcg = _idcg_table(k)[ideal]
    return df.select("subject_id", "n_relevant", "n_hits").with_columns(
        recall=pl.Series(n_hits / n_rel),
        precision=pl.Series(n_hits / k),
        hit=pl.Series((n_hits > 0).astype(np.float64)),
        mrr=pl.Series(np.where(first > 0, 1.0 / np.maximum(first, 1), 0.0)),
        ndcg=pl.Series(df["dcg"].to_numpy() / idcg),
        map=pl.Series(df["ap"].to_numpy() / ideal),
    )


def coverage(recs: pl.DataFrame, k: int, catalogue_size: int) -> float:
    """Share of the catalogue that appears in at least one user's top k."""
    if catalogue_size <= 0:
        raise ContractError(f"catalogue size must be positive, got {catalogue_size}")
    n = recs.filter(pl.col("rank") <= k).select(pl.col("item_id").n_unique()).item()
    return n / catalogue_size


def evaluate(recs: pl.DataFrame, truth: pl.DataFrame, k: int, metrics=METRICS, *,
             catalogue_size: int | None = None) -> dict[str, float]:
    """Mean of each per-user metric over users in ``truth``, plus coverage when asked (needs catalogue_size)."""
    metrics = parse_metrics(metrics)
    if truth.height == 0:
        raise ContractError("truth frame is empty: no user has a relevant item to evaluate against")
    pu = per_user(recs, truth, k)
    out = {m: float(pu[m].mean()) for m in metrics if m in USER_METRICS}
    if "coverage" in metrics:
        if catalogue_size is None:
            raise ContractError("coverage needs the catalogue size")
        users = truth["subject_id"].cast(pl.String).unique()
        out["coverage"] = coverage(recs.filter(pl.col("subject_id").cast(pl.String).is_in(users.implode())), k,
                                   catalogue_size)
    return {m: out[m] for m in metrics}

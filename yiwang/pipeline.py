"""The nightly pipeline: ingest, profile and tag (one pass), train (when due), recommend, alerts, delivery.

The stages are the registry's (:mod:`yiwang.stages`), the same the scheduler's jobs run; this module only
orders them, times them and collects their summaries. `yiwang run` and `yiwang demo` call :func:`run_nightly`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import sqlite_utils

from data.settings import Settings

# The stages of a night, in order. Ingest runs only when an export is given; train only when due.
NIGHTLY = ("ingest", "profile_tag", "train", "recommend", "alerts", "deliver")


@dataclass
class StageResult:
    stage: str
    status: str  # ok / skipped / failed
    seconds: float
    summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class RunSummary:
    as_of: str
    stages: list[StageResult]

    @property
    def ok(self) -> bool:
        return all(s.status != "failed" for s in self.stages)

    def to_dict(self) -> dict[str, Any]:
        return {"as_of": self.as_of, "ok": self.ok, "stages": [dataclasses.asdict(s) for s in self.stages]}


def summary_dict(obj: Any) -> dict[str, Any]:
    """A stage's summary as plain JSON-able data, whatever shape the stage returned."""
    if obj is None:
        return {}
    if hasattr(obj, "to_dict"):
        obj = obj.to_dict()
    elif dataclasses.is_dataclass(obj):
        obj = dataclasses.asdict(obj)
    if not isinstance(obj, dict):
        return {"result": str(obj)}
    return json.loads(json.dumps(obj, default=str))


def model_due(settings: Settings, as_of: date, every_days: int = 7) -> bool:
    """Retrain when no model exists or the newest one is at least ``every_days`` old (as of ``as_of``)."""
    marker = settings.models_dir
    # Every trained recommender version records its as-of date in metrics.json (recommender/training.py).
    trained = sorted(p for p in marker.glob("*/metrics.json")) if marker.exists() else []
    if not trained:
        return True
    newest = None
    for cfg in trained:
        try:
            trained_as_of = date.fromisoformat(json.loads(cfg.read_text()).get("as_of", "")[:10])
        except (ValueError, OSError):
            continue
        newest = trained_as_of if newest is None or trained_as_of > newest else newest
    return newest is None or (as_of - newest) >= timedelta(days=every_days)


def run_nightly(
    settings: Settings,
    db: sqlite_utils.Database,
    as_of: date,
    export_dir: Path | None = None,
    train: str = "auto",  # auto / always / never
    progress=None,
    on_stage: Callable[[StageResult], None] | None = None,
) -> RunSummary:
    """Run every stage in order; a failed stage stops the rest."""
    from yiwang.stages import stage  # the engines load with a run, not with the CLI

    results: list[StageResult] = []
    now = datetime.combine(as_of, datetime.min.time(), tzinfo=timezone.utc) + timedelta(hours=1)
    do_train = train == "always" or (train == "auto" and model_due(settings, as_of))

    def record(result: StageResult) -> None:
        results.append(result)
        if on_stage:
            on_stage(result)

    failed = False
    for name in NIGHTLY:
        st = stage(name)
        if st.name == "ingest" and export_dir is None:
            continue
        if st.name == "train" and not do_train:
            record(StageResult("train", "skipped", 0.0, {"reason": "model is fresh (trained within 7 days)"}))
            continue
        if failed:
            for line in st.lines:
                record(StageResult(line, "skipped", 0.0, {"reason": "an earlier stage failed"}))
            continue
        when = now if st.clock == "now" else as_of
        options = {"export_dir": export_dir} if st.name == "ingest" else {}
        t0 = time.perf_counter()
        try:
            out = st(settings, db, when, progress=progress, **options)
        except Exception as exc:  # a stage's failure is reported in the summary; the run goes on no further
            failed = True
            record(StageResult(st.lines[0], "failed", time.perf_counter() - t0, error=f"{type(exc).__name__}: {exc}"))
            for line in st.lines[1:]:
                record(StageResult(line, "skipped", 0.0, {"reason": "an earlier stage failed"}))
            continue
        seconds = time.perf_counter() - t0
        for i, (line, summary) in enumerate(st.summaries(out)):
            # A one-pass stage's first line carries the pass's time; the later ones ran inside it and keep their own.
            record(StageResult(line, "ok", seconds if i == 0 else getattr(summary, "seconds", 0.0), summary_dict(summary)))
    return RunSummary(as_of=as_of.isoformat(), stages=results)

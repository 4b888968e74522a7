"""The nightly pipeline: ingest, profile, tag, train (when due), recommend, alerts, delivery.

One function per stage lives in its area (docs/architecture.md); this module only chains them, times
them and collects their summaries. `yiwang run` and the scheduler's nightly job call :func:`run_nightly`.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import sqlite_utils

from data.settings import Settings


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


@dataclass
class _Ran:
    """A stage's summary produced by an earlier stage's call, with the seconds it took there."""

    summary: Any
    seconds: float


def _entry(path: str) -> Callable[..., Any]:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


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
    """Run every stage in order; a failed stage stops the ones that depend on it."""
    results: list[StageResult] = []
    now = datetime.combine(as_of, datetime.min.time(), tzinfo=timezone.utc) + timedelta(hours=1)

    stages: list[tuple[str, Callable[[], Any] | None]] = []
    if export_dir is not None:
        stages.append(("ingest", lambda: _entry("data.ingest.ingest_export")(settings, db, export_dir, as_of=as_of, progress=progress)))
    # Profiles and tags are made in one pass (the taggers read the profiles from memory while they are
    # published); each keeps its own line in the summary.
    together: dict[str, Any] = {}

    def profile_stage() -> Any:
        profile, tags = _entry("taggers.profile_and_tag")(settings, db, as_of, progress=progress)
        together["tag"] = _Ran(tags, tags.seconds)
        return profile

    stages += [("profile", profile_stage), ("tag", lambda: together["tag"])]
    do_train = train == "always" or (train == "auto" and model_due(settings, as_of))
    stages.append(("train", (lambda: _entry("recommender.train")(settings, db, as_of, progress=progress)) if do_train else None))
    stages += [
        ("recommend", lambda: _entry("recommender.recommend")(settings, db, as_of, progress=progress)),
        ("alerts", lambda: _entry("notifier.evaluate_alerts")(settings, db, as_of)),
        ("deliver", lambda: _entry("notifier.deliver")(settings, db, now)),
    ]
    failed = False
    for name, call in stages:
        if call is None:
            result = StageResult(name, "skipped", 0.0, {"reason": "model is fresh (trained within 7 days)"})
        elif failed:
            result = StageResult(name, "skipped", 0.0, {"reason": "an earlier stage failed"})
        else:
            t0 = time.perf_counter()
            try:
                out = call()
                seconds = time.perf_counter() - t0
                if isinstance(out, _Ran):
                    out, seconds = out.summary, out.seconds
                result = StageResult(name, "ok", seconds, summary_dict(out))
            except Exception as exc:  # a stage's failure is reported in the summary; the run goes on no further
                failed = True
                result = StageResult(name, "failed", time.perf_counter() - t0, error=f"{type(exc).__name__}: {exc}")
        results.append(result)
        if on_stage:
            on_stage(result)
    return RunSummary(as_of=as_of.isoformat(), stages=results)

"""The stages: one registry of the engines' batch work, through which `yiwang run`, the scheduler and the CLI run it.

A stage is one engine entry point and what the shell must know to call it: whether it works as of a business date
(``as_of``) or at the current time (``now``), whether it reports progress, which stages' output it reads, and which
summary lines it gives. ``profile_tag`` is the one pass (the taggers read the profiles from memory while they are
published): it does the work of ``profile`` then ``tag`` and reports one line for each.

The nightly run (:mod:`yiwang.pipeline`) and the scheduler's jobs (:mod:`yiwang.scheduler`) are orders and
schedules of these stages by name; both resolve the name here, so they call the same functions. The CLI's stage
commands call these objects; the HTTP API runs no stage (it imports the engines' read and control functions).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Callable, Literal

import sqlite_utils

import notifier
import profiler
import recommender
import taggers
from data.errors import StateError
from data.ingest import ingest_export
from data.settings import Settings

Clock = Literal["as_of", "now"]


@dataclass(frozen=True)
class Stage:
    name: str
    function: Callable[..., Any]
    # The keyword the function takes its moment by: a business date (as_of) or the current time (now).
    clock: Clock
    # Stages whose output this one reads: each runs before it, in the same run or an earlier one.
    depends_on: tuple[str, ...] = ()
    takes_progress: bool = True
    # The summary lines the stage gives, in order (one per stage whose work it does); empty means just its name.
    reports: tuple[str, ...] = ()
    # Keyword arguments the function cannot run without (beyond settings, db and the moment).
    requires: tuple[str, ...] = ()

    @property
    def lines(self) -> tuple[str, ...]:
        return self.reports or (self.name,)

    def __call__(self, settings: Settings, db: sqlite_utils.Database, when: date | datetime | None, *,
                 progress=None, **options: Any) -> Any:
        """Run the stage as of ``when`` (a date, or for a ``now`` stage a time; None there means the clock)."""
        missing = [k for k in self.requires if options.get(k) is None]
        if missing:
            raise StateError(f"stage {self.name} needs {', '.join(missing)}")
        kwargs = {self.clock: when, **options}
        if progress is not None and self.takes_progress:
            kwargs["progress"] = progress
        return self.function(settings, db, **kwargs)

    def summaries(self, result: Any) -> list[tuple[str, Any]]:
        """The stage's result as (summary line, summary) pairs; a one-pass stage returns one summary per line."""
        if len(self.lines) == 1:
            return [(self.name, result)]
        return list(zip(self.lines, result, strict=True))


INGEST = Stage("ingest", ingest_export, "as_of", requires=("export_dir",))
PROFILE_TAG = Stage("profile_tag", taggers.profile_and_tag, "as_of", depends_on=("ingest",), reports=("profile", "tag"))
PROFILE = Stage("profile", profiler.build_profiles, "as_of", depends_on=("ingest",))
TAG = Stage("tag", taggers.run_taggers, "as_of", depends_on=("profile",))
TRAIN = Stage("train", recommender.train, "as_of", depends_on=("profile", "tag"))
RECOMMEND = Stage("recommend", recommender.recommend, "as_of", depends_on=("profile", "tag", "train"))
ALERTS = Stage("alerts", notifier.evaluate_alerts, "as_of", depends_on=("profile", "tag"), takes_progress=False)
DELIVER = Stage("deliver", notifier.deliver, "now", depends_on=("alerts",), takes_progress=False)

STAGES: dict[str, Stage] = {s.name: s for s in (INGEST, PROFILE_TAG, PROFILE, TAG, TRAIN, RECOMMEND, ALERTS, DELIVER)}


def stage(name: str) -> Stage:
    """The stage called ``name``; an unknown name is a StateError naming it and the stages there are."""
    try:
        return STAGES[name]
    except KeyError:
        raise StateError(f"no stage {name!r} (stages: {', '.join(STAGES)})") from None


def out_of_order(names: tuple[str, ...] | list[str]) -> list[str]:
    """The problems of running ``names`` in this order: a stage placed before one whose output it reads.

    A stage may depend on one that is not in the list (it ran in an earlier run, or on another schedule).
    """
    problems = []
    for i, name in enumerate(names):
        for dep in stage(name).depends_on:
            problems += [f"{name} runs before {later}, whose {dep} output it reads"
                         for later in names[i + 1:] if dep in stage(later).lines]
    return problems

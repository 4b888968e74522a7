"""The stage registry: `yiwang run`, the scheduler, the CLI and the API run the engines' work through one list."""

from __future__ import annotations

import ast
import importlib
import inspect
from datetime import date, datetime
from pathlib import Path

import pytest

from data.errors import StateError
from taggers.store import read_tags
from yiwang import pipeline, scheduler, stages
from yiwang.stages import STAGES, stage

ROOT = Path(__file__).resolve().parents[1]
ENGINES = ("profiler", "taggers", "recommender", "notifier")


def test_an_unknown_stage_is_named():
    with pytest.raises(StateError, match=r"no stage 'no_such_stage' \(stages: ingest, profile_tag, profile, tag"):
        stage("no_such_stage")
    assert stage("deliver") is stages.DELIVER and stage("deliver").function.__name__ == "deliver"


def test_each_stage_matches_the_function_it_calls():
    """Names, clocks, progress and required arguments agree with the engine functions' own signatures."""
    lines = {line for st in STAGES.values() for line in st.lines}
    for name, st in STAGES.items():
        assert st.name == name
        params = inspect.signature(st.function).parameters
        assert list(params)[:2] == ["settings", "db"], name
        assert st.clock in params, (name, st.clock)
        assert ("progress" in params) == st.takes_progress, name
        assert set(st.requires) <= set(params), name
        assert set(st.depends_on) <= lines, (name, st.depends_on)
        assert name not in st.depends_on
    assert [n for n, st in STAGES.items() if st.clock == "now"] == ["deliver"]


def test_a_stage_refuses_to_run_without_what_it_requires(settings, db):
    with pytest.raises(StateError, match="stage ingest needs export_dir"):
        stages.INGEST(settings, db, date(2026, 11, 20))


def test_orders_are_checked_against_dependencies():
    assert stages.out_of_order(pipeline.NIGHTLY) == []
    assert stages.out_of_order(["recommend", "train"]) == ["recommend runs before train, whose train output it reads"]
    assert stages.out_of_order(["tag", "profile_tag"]) == ["tag runs before profile_tag, whose profile output it reads"]


def test_every_stage_is_reachable_from_yiwang_run_and_the_scheduler():
    """`yiwang run` and the scheduler name registry stages, the same ones; every stage of the registry is run by
    one of them, or its work is done there by a one-pass stage (profile and tag are the one pass's two lines)."""
    run = set(pipeline.NIGHTLY)
    scheduled = {name for _key, names in scheduler.JOBS.values() for name in names}
    assert run <= set(STAGES) and scheduled <= set(STAGES)
    # The scheduler runs what a night runs, except the ingest of an export (exports arrive by hand).
    assert scheduled == run - {"ingest"}
    reached = run | scheduled
    done_inside = {line for name in reached for line in stage(name).lines}
    assert set(STAGES) <= reached | done_inside
    for job_id, (_key, names) in scheduler.JOBS.items():
        assert names and stages.out_of_order(names) == [], job_id
    assert scheduler.JOBS["profile_tag"][1] == ["profile_tag"]  # the one pass, as `yiwang run` does it


def _imported_objects(path: Path):
    """(name, object, line) for what a module imports and the attributes it reads from imported modules."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    modules: dict[str, object] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in ENGINES + ("data",):
                    # `import a.b` binds a; `import a.b as c` binds c to a.b
                    bound = alias.name if alias.asname else alias.name.split(".")[0]
                    modules[alias.asname or bound] = importlib.import_module(bound)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ENGINES + ("data",):
            mod = importlib.import_module(node.module)
            for alias in node.names:
                obj = getattr(mod, alias.name, None)
                if obj is None:
                    obj = importlib.import_module(f"{node.module}.{alias.name}")
                modules[alias.asname or alias.name] = obj
                yield alias.name, obj, node.lineno
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
            owner = modules[node.value.id]
            if inspect.ismodule(owner) and hasattr(owner, node.attr):
                yield f"{node.value.id}.{node.attr}", getattr(owner, node.attr), node.lineno


def test_the_shell_runs_stage_functions_only_through_the_registry():
    """No module of the shell but the registry takes a stage's engine function itself: the CLI, the API, the
    pipeline, the scheduler and the demo call the registry's stages, so they all run the same thing."""
    functions = {st.function: name for name, st in STAGES.items()}
    found = []
    for path in sorted((ROOT / "yiwang").rglob("*.py")):
        if path == ROOT / "yiwang" / "stages.py":
            continue
        for name, obj, line in _imported_objects(path):
            if inspect.isfunction(obj) and obj in functions:
                found.append(f"{path.relative_to(ROOT)}:{line}: {name} (stage {functions[obj]})")
    assert found == []
    # The checker sees a stage function where one is taken.
    registry = list(_imported_objects(ROOT / "yiwang" / "stages.py"))
    assert {functions[o] for _n, o, _l in registry if inspect.isfunction(o) and o in functions} == set(STAGES)


def test_the_scheduled_profile_and_tag_job_is_the_one_pass(tmp_path):
    """The nightly profile/tag job runs stage profile_tag, as `yiwang run` does, and records a line per summary."""
    from data.ingest import ingest_export
    from data.settings import load_settings
    from data.synth import generate_city
    from yiwang.migrations import open_db

    settings = load_settings(home=tmp_path / "home", id_hash_key="k")
    today = datetime.now(scheduler.LOCAL).date()
    generate_city(tmp_path / "city", 300, 30, 3, today)
    db = open_db(settings.db_path)
    ingest_export(settings, db, tmp_path / "city" / "export", as_of=today)
    db.conn.close()

    done = scheduler.run_job("profile_tag", str(settings.home))
    assert [line.split(":")[0] for line in done] == ["profile", "tag"]
    db = open_db(settings.db_path)
    try:
        [(_, status, summary)] = scheduler.list_runs(db, "profile_tag")
        assert status == "ok" and summary == "\n".join(done)
        assert '"as_of": "%s"' % today.isoformat() in done[0] and '"tags_written"' in done[1]
        assert read_tags(db).height > 0
    finally:
        db.conn.close()

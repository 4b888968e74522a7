"""The nightly chain end to end on a small synthetic city: every stage runs on the real store."""

from datetime import date

import pytest

from yiwang.demo import run_demo
from yiwang.pipeline import run_nightly

AS_OF = date(2026, 11, 20)


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory):
    from data.settings import load_settings
    from yiwang.migrations import open_db

    settings = load_settings(home=tmp_path_factory.mktemp("pipeline") / "home", id_hash_key="test-key")
    db = open_db(settings.db_path)
    result = run_demo(settings, db, AS_OF, people=1500, enterprises=150, seed=3)
    yield settings, db, result
    db.conn.close()


def test_demo_runs_every_stage_and_shows_samples(demo_home):
    _, _, result = demo_home
    assert [s.stage for s in result.run.stages] == [
        "synth", "ingest", "profile", "tag", "train", "recommend", "alerts", "deliver"
    ]
    assert all(s.status == "ok" for s in result.run.stages), [(s.stage, s.error) for s in result.run.stages]
    assert result.samples, "the demo printed no sample feed"
    recommend = next(s for s in result.run.stages if s.stage == "recommend")
    assert recommend.summary["subjects"] >= 1650


def test_next_night_skips_training_while_the_model_is_fresh(demo_home):
    settings, db, _ = demo_home
    summary = run_nightly(settings, db, AS_OF, train="auto")
    by_stage = {s.stage: s for s in summary.stages}
    assert summary.ok, [(s.stage, s.error) for s in summary.stages]
    assert by_stage["train"].status == "skipped"
    # Re-running the same night creates no second copy of any alert.
    assert by_stage["alerts"].summary["created"] == 0


def test_a_failing_stage_stops_the_rest(demo_home, tmp_path):
    settings, db, _ = demo_home
    missing = tmp_path / "no-such-export"
    summary = run_nightly(settings, db, AS_OF, export_dir=missing, train="never")
    assert summary.stages[0].stage == "ingest" and summary.stages[0].status == "failed"
    assert "no-such-export" in summary.stages[0].error
    assert all(s.status == "skipped" for s in summary.stages[1:])
    assert not summary.ok

"""Taggers over a small city: each rule family, eager/lazy parity, expiry, deletion surviving re-runs, the model."""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

import profiler
import taggers
from testsupport.sample_city import SAMPLE_AS_OF, load_city, sample_city
from taggers.occupation import OccupationClassifier, OccupationTagger
from taggers.store import delete_tag, list_tags, read_tags, restore_tag
from data.errors import NotFound, StateError
from data.eventlog import scan_events
from data.registry import scan_table

AS_OF = date.fromisoformat(SAMPLE_AS_OF)


@pytest.fixture
def city(settings, db):
    load_city(settings, db, **sample_city())
    return settings, db


def _run(settings, db, as_of=AS_OF):
    profiler.build_profiles(settings, db, as_of)
    return taggers.run_taggers(settings, db, as_of)


@pytest.fixture
def tagged(city):
    settings, db = city
    summary = _run(settings, db)
    return settings, db, summary


def codes(db, subject_id, sensitive=True) -> set[str]:
    return {t["code"] for t in list_tags(db, subject_id, include_sensitive=sensitive)}


def test_household_life_events_go_to_parents_only(tagged):
    _, db, _ = tagged
    for parent in ("P1", "P2"):
        assert {"life_event.birth", "life_event.second_child", "life_event.school_entry"} <= codes(db, parent)
    grandpa = codes(db, "P5")
    assert not grandpa & {"life_event.birth", "life_event.second_child", "life_event.school_entry"}
    assert {"life_event.retirement", "crowd.elderly", "crowd.parent_young_child"} <= grandpa


def test_birth_evidence_and_validity(tagged):
    _, db, _ = tagged
    birth = next(t for t in list_tags(db, "P1", False) if t["code"] == "life_event.birth")
    assert birth["valid_from"] == "2026-03-01"
    assert birth["valid_until"] == "2027-03-01"  # taxonomy: 365 days
    assert "2026-03-01" in birth["evidence_zh"] and "2026-03-01" in birth["evidence_en"]
    assert birth["source"] == "rule:birth_in_household@1" and birth["confidence"] == 1.0


def test_marriage_from_licence_and_expiry(tagged):
    _, db, _ = tagged
    wed = next(t for t in list_tags(db, "P7", False) if t["code"] == "life_event.marriage")
    assert wed["evidence_zh"] == "婚姻登记 2026-10-01"
    assert "life_event.marriage" not in codes(db, "P8")  # married in 2025: no longer a live event
    assert "life_event.marriage" not in codes(db, "P9")  # licence issued after as_of


def test_crowds_and_sensitive_flag(tagged):
    _, db, _ = tagged
    assert {"crowd.hardship", "crowd.disabled", "crowd.non_local", "life_event.retirement"} <= codes(db, "P6")
    assert codes(db, "P6", sensitive=False) & {"crowd.hardship", "crowd.disabled"} == set()
    sensitive = {t["code"]: t["sensitive"] for t in list_tags(db, "P6", True)}
    assert sensitive["crowd.hardship"] and sensitive["crowd.disabled"] and not sensitive["crowd.non_local"]
    assert "crowd.disabled" in codes(db, "P11")  # from the disability certificate alone
    assert "life_event.retirement" not in codes(db, "P12")  # turned 50 but still works
    assert {"crowd.child"} <= codes(db, "P3") and "crowd.child" in codes(db, "P4")
    child = next(t for t in list_tags(db, "P4", False) if t["code"] == "crowd.child")
    assert child["valid_until"] == "2034-05-09"


def test_behaviour_only_events_need_an_application(tagged):
    _, db, _ = tagged
    assert "life_event.job_seeking" in codes(db, "P9")
    assert "life_event.job_seeking" not in codes(db, "P10")  # views only (one of them after as_of)
    assert "life_event.job_seeking" in codes(db, "P999")  # known only from events
    seek = next(t for t in list_tags(db, "P9", False) if t["code"] == "life_event.job_seeking")
    assert seek["confidence"] == 0.7 and seek["valid_from"] == "2026-11-20"
    assert seek["evidence_en"] == "applied for job-seeking services 1 times in 90 days"


def test_enterprise_tags(tagged):
    _, db, _ = tagged
    assert codes(db, "E1") == {"enterprise.new_business", "enterprise.industry_I", "enterprise.size_micro"}
    assert codes(db, "E2") == {"enterprise.food_catering", "enterprise.industry_H", "enterprise.size_medium"}
    assert "enterprise.high_tech_candidate" in codes(db, "E3")
    assert "enterprise.high_tech_candidate" not in codes(db, "E4")  # 2,500 staff: past the size limit
    assert "enterprise.size_large" in codes(db, "E4")


def test_registry_occupation_tag(tagged):
    _, db, _ = tagged
    occ = [t for t in list_tags(db, "P2", False) if t["dimension"] == "occupation"]
    assert [(t["code"], t["confidence"]) for t in occ] == [("occupation.teacher", 1.0)]


def test_tags_expire_by_themselves(city):
    settings, db = city
    _run(settings, db, date(2027, 4, 15))
    assert "life_event.marriage" not in codes(db, "P7")  # 2026-10-01 + 180 days has passed
    assert "life_event.birth" not in codes(db, "P1")  # the newborn is over a year old
    assert "enterprise.new_business" not in codes(db, "E1")
    # Annual reports are due in the first half of the year for enterprises founded before it.
    assert "enterprise.annual_report_due" in codes(db, "E2")
    assert "enterprise.annual_report_due" in codes(db, "E1")
    assert "enterprise.annual_report_due" not in codes(db, "E3")  # filed in February
    report = next(t for t in list_tags(db, "E2", False) if t["code"] == "enterprise.annual_report_due")
    assert (report["valid_from"], report["valid_until"]) == ("2027-01-01", "2027-06-30")


def test_deletion_survives_reruns_until_restored(tagged):
    settings, db, _ = tagged
    delete_tag(db, "P7", "life_event.marriage")
    assert "life_event.marriage" not in codes(db, "P7")
    summary = taggers.run_taggers(settings, db, AS_OF)
    assert summary.suppressed == 1
    assert "life_event.marriage" not in codes(db, "P7")
    assert "life_event.marriage" not in set(taggers.scan_tags(settings).filter(pl.col("subject_id") == "P7").collect()["code"])
    restore_tag(db, "P7", "life_event.marriage")
    taggers.run_taggers(settings, db, AS_OF)
    assert "life_event.marriage" in codes(db, "P7")


def test_deletion_during_a_batch_is_honoured_at_the_swap(tagged, monkeypatch):
    """A citizen deletes a tag while the batch fills its build table: the swap must not bring it back."""
    from taggers import store
    from yiwang.migrations import open_db

    settings, db, _ = tagged
    assert "life_event.marriage" in codes(db, "P7")
    fill = store._fill_build_table

    def fill_then_delete(conn, rows):
        fill(conn, rows)
        other = open_db(settings.db_path)  # the citizen's request, on its own connection
        try:
            delete_tag(other, "P7", "life_event.marriage")
        finally:
            other.conn.close()

    monkeypatch.setattr(store, "_fill_build_table", fill_then_delete)
    summary = taggers.run_taggers(settings, db, AS_OF)
    assert summary.suppressed == 1
    assert "life_event.marriage" not in codes(db, "P7")
    assert read_tags(db).height == summary.tags_written
    names = {r[0] for r in db.conn.execute("SELECT name FROM sqlite_master WHERE name LIKE 'tags%'")}
    assert "tags_build" not in names and "tags_old" not in names
    assert not [n for n in names if n.startswith("tags_code")]


def test_scan_tags_drops_tags_deleted_after_the_batch(tagged):
    settings, db, summary = tagged
    before = taggers.scan_tags(settings).collect()
    assert before.height == summary.tags_written
    assert_frame_equal(before.sort("subject_id", "code"), taggers.scan_tags(db).collect().sort("subject_id", "code"))
    delete_tag(db, "P6", "crowd.hardship")
    after = taggers.scan_tags(settings).collect()
    assert after.height == before.height - 1
    assert after.filter((pl.col("subject_id") == "P6") & (pl.col("code") == "crowd.hardship")).height == 0


def test_delete_and_restore_unknown_raise_not_found(tagged):
    _, db, _ = tagged
    with pytest.raises(NotFound, match="has no tag 'crowd.elderly'"):
        delete_tag(db, "P7", "crowd.elderly")
    with pytest.raises(NotFound, match="no deleted tag"):
        restore_tag(db, "P7", "life_event.marriage")


def test_tagging_needs_profiles_of_the_same_day(city):
    settings, db = city
    profiler.build_profiles(settings, db, AS_OF)
    with pytest.raises(StateError, match="yiwang profile --as-of 2026-12-01"):
        taggers.run_taggers(settings, db, date(2026, 12, 1))


def test_empty_event_log_still_tags_registry_facts(settings, db):
    city = sample_city()
    city["events"] = []
    load_city(settings, db, **city)
    _run(settings, db)
    assert "life_event.birth" in codes(db, "P1")
    assert "life_event.job_seeking" not in codes(db, "P9")


def test_eager_and_lazy_inputs_give_identical_tags(city):
    settings, db = city
    profiler.build_profiles(settings, db, AS_OF)
    rs = taggers.check_rules(settings)
    sources = [
        profiler.scan_profiles(settings),
        scan_table(settings.home, "licenses"),
        scan_events(settings.events_dir),
        scan_table(settings.home, "catalog"),
    ]

    def run(frames):
        frame = taggers.tagging_frame(*frames, rs, AS_OF, extra_event_aggregates=taggers.occupation_event_aggregates())
        tags = taggers.rule_tags(frame, rs, AS_OF).collect().sort("subject_id", "code", "source")
        features = frame.select("subject_id", *taggers.occupation.feature_exprs()).collect().sort("subject_id")
        return tags, features

    lazy_tags, lazy_features = run(sources)
    eager_tags, eager_features = run([f.collect() for f in sources])
    assert lazy_tags.height > 30
    assert_frame_equal(lazy_tags, eager_tags)
    assert_frame_equal(lazy_features, eager_features)
    assert lazy_features.filter(pl.col("subject_id") == "P2")["f_occ_teacher"].item() == 1


# -- the learned occupation tagger -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def occupation_data():
    """Persons whose occupation shows in age, licences and occupation-linked service use, with noise."""
    rng = np.random.default_rng(7)
    n = 3000
    occ = rng.choice(["teacher", "driver", "it_professional", "office_worker"], n, p=[0.2, 0.2, 0.2, 0.4])
    signal = {o: (occ == o) * rng.poisson(3, n) + rng.poisson(0.3, n) for o in ("teacher", "driver", "it_professional")}
    frame = pl.DataFrame(
        {
            "subject_id": [f"P{i}" for i in range(n)],
            "subject_type": ["person"] * n,
            "occupation": [o if i < 2000 else None for i, o in enumerate(occ)],
            "age": rng.integers(22, 60, n).astype(np.int32),
            "gender": rng.choice(["M", "F"], n),
            "local_hukou": rng.random(n) < 0.6,
            "n_licenses": rng.integers(0, 4, n).astype(np.int32),
            "is_legal_rep": rng.random(n) < 0.05,
            "views_180d": rng.integers(0, 20, n).astype(np.int32),
            "applies_180d": rng.integers(0, 5, n).astype(np.int32),
            "n_children": rng.integers(0, 3, n).astype(np.int32),
            "license_types": [["teacher_qualification"] if o == "teacher" and rng.random() < 0.5 else [] for o in occ],
            **{f"occ.{o}.count": signal.get(o, rng.poisson(0.3, n)).astype(np.int32) for o in taggers.occupation.OCCUPATIONS},
        }
    )
    return frame, occ


def test_classifier_follows_estimator_conventions(occupation_data):
    frame, occ = occupation_data
    params = {"n_estimators": 40, "learning_rate": 0.2, "random_state": 3, "n_jobs": 1}
    model = OccupationClassifier(**params)
    assert {k: model.get_params()[k] for k in params} == params
    X = frame.select(taggers.occupation.feature_exprs()).to_numpy()
    assert model.fit(X[:2000], occ[:2000]) is model
    assert model.get_params()["n_estimators"] == 40  # hyperparameters untouched by fit
    assert list(model.classes_) == sorted(set(occ))
    assert model.temperature_ > 0 and model.n_train_ + model.n_calibration_ == 2000
    proba = model.predict_proba(X[2000:])
    assert proba.shape == (1000, 4)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    accuracy = (model.predict(X[2000:]) == occ[2000:]).mean()
    assert accuracy > 0.75  # the majority class alone gets about 0.4


def test_calibrated_confidence_matches_accuracy(occupation_data):
    frame, occ = occupation_data
    X = frame.select(taggers.occupation.feature_exprs()).to_numpy()
    model = OccupationClassifier(n_estimators=60, random_state=0, n_jobs=1).fit(X[:2000], occ[:2000])
    proba = model.predict_proba(X[2000:])
    confident = proba.max(axis=1)
    correct = model.predict(X[2000:]) == occ[2000:]
    # Calibrated: mean confidence is close to the hit rate.
    assert abs(confident.mean() - correct.mean()) < 0.08


def test_occupation_tags_respect_threshold_and_only_fill_unknowns(occupation_data):
    frame, occ = occupation_data
    tagger = OccupationTagger(min_confidence=0.0, n_estimators=40, n_jobs=1).fit(frame, AS_OF)
    loose = tagger.predict(frame, AS_OF)
    strict = tagger.set_params(min_confidence=0.9).predict(frame, AS_OF)
    assert tagger.version_ is not None
    assert loose.height == 1000  # every person the registry does not know, nobody else
    assert set(loose["subject_id"]) == {f"P{i}" for i in range(2000, 3000)}
    assert 0 < strict.height < loose.height
    assert strict["confidence"].min() >= 0.9
    hits = strict.with_columns(pl.col("subject_id").str.slice(1).cast(pl.Int64).alias("i"))
    truth = pl.Series([f"occupation.{o}" for o in occ])
    precision = (hits["code"] == truth.gather(hits["i"])).mean()
    assert precision > 0.9


def test_people_without_an_occupation_are_rarely_tagged(occupation_data):
    """The registry never says "none": the presence model must keep people who show no sign of work untagged."""
    frame, _ = occupation_data
    rng = np.random.default_rng(11)
    n = 600
    idle = frame.head(n).with_columns(
        pl.Series("subject_id", [f"N{i}" for i in range(n)]),
        pl.lit(None, pl.String).alias("occupation"),
        # Working age, so the age gate does not hide them: only the presence model can.
        pl.Series("age", rng.integers(22, 60, n).astype(np.int32)),
        pl.lit([], pl.List(pl.String)).alias("license_types"),
        *[pl.lit(0, pl.Int32).alias(f"occ.{o}.count") for o in taggers.occupation.OCCUPATIONS],
    )
    both = pl.concat([frame, idle])
    tagger = OccupationTagger(min_confidence=0.6, n_estimators=40, n_jobs=1).fit(both, AS_OF)
    tags = tagger.predict(both, AS_OF)
    idle_tagged = tags.filter(pl.col("subject_id").str.starts_with("N")).height
    working_tagged = tags.filter(pl.col("subject_id").str.starts_with("P")).height
    assert idle_tagged < 0.1 * n
    assert working_tagged > 0.5 * 1000
    model = tagger.classifier_
    assert model.label_frequency_.shape == (len(model.classes_),)


def test_run_taggers_reports_model_when_labels_suffice(tagged):
    _, _, summary = tagged
    # The sample city has two labelled persons: too few to learn from, so no model and no guesses.
    assert summary.occupation_model is None
    assert summary.by_dimension.get("occupation") == 2


def test_profile_and_tag_in_one_pass_equals_the_two_commands(city):
    settings, db = city
    _run(settings, db)
    profiles_before = profiler.scan_profiles(settings).drop("batch_id").collect()
    tags_before = taggers.scan_tags(settings).collect().sort("subject_id", "code")
    served_before = profiler.read_profile(db, "P7", include_sensitive=True)
    delete_tag(db, "P7", "life_event.marriage")

    profile, tags = taggers.profile_and_tag(settings, db, AS_OF)

    assert profile.persons + profile.enterprises + profile.unknown == profiles_before.height
    assert_frame_equal(profiler.scan_profiles(settings).drop("batch_id").collect(), profiles_before)
    assert profiler.read_profile(db, "P7", include_sensitive=True) == {**served_before, "batch_id": profile.batch_id}
    # Identical tags, minus the one the citizen deleted in between.
    expected = tags_before.filter(~((pl.col("subject_id") == "P7") & (pl.col("code") == "life_event.marriage")))
    assert_frame_equal(taggers.scan_tags(settings).collect().sort("subject_id", "code"), expected)
    assert_frame_equal(taggers.scan_tags(db).collect().sort("subject_id", "code"), expected)
    assert tags.suppressed == 1 and tags.tags_written == expected.height


def test_profile_and_tag_checks_the_rules_before_publishing_anything(city, tmp_path):
    settings, db = city
    bad = tmp_path / "rules.yaml"
    bad.write_text("rules:\n  - id: r1\n    tag: crowd.elderly\n    when: no_such_field >= 60\n", encoding="utf-8")
    batches = profiler.list_batches(db)
    with pytest.raises(Exception, match="no_such_field"):
        taggers.profile_and_tag(settings.model_copy(update={"tag_rules_file": bad}), db, AS_OF)
    assert profiler.list_batches(db) == batches

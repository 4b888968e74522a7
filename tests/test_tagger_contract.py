"""One contract, checked for every registered learned tagger (and for the worked example of
docs/adding-a-learned-tagger.md, which this file runs as written there)."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

import profiler
import taggers
from cities import AS_OF, mini_city
from data.errors import ConfigFileError, StateError
from estimator_contract import EstimatorContract
from taggers.base import LEARNED_TAGGERS, TAG_ROW_SCHEMA, LearnedTagger, make_tagger, register_tagger
from taggers.occupation import OCCUPATIONS, OccupationClassifier, OccupationTagger
from taggers.rules import Aggregate

DOC = Path(__file__).resolve().parent.parent / "docs" / "adding-a-learned-tagger.md"


def _docs_example() -> type[LearnedTagger]:
    """The toy tagger of the docs page, exactly as written there (its registration undone: the batch runs it only
    where a test registers it)."""
    code = re.search(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S).group(1)
    namespace: dict = {}
    exec(compile(code, str(DOC), "exec"), namespace)
    cls = namespace["TeacherByAgeTagger"]
    assert LEARNED_TAGGERS.pop(cls.name) is cls
    return cls


TeacherByAgeTagger = _docs_example()


@pytest.fixture(scope="module")
def persons() -> pl.DataFrame:
    """A tagging frame of 3,000 persons, two thirds with a registry occupation that shows in age, licences and
    occupation-linked service use."""
    rng = np.random.default_rng(5)
    n = 3000
    occ = rng.choice(["teacher", "driver", "it_professional", "office_worker"], n, p=[0.2, 0.2, 0.2, 0.4])
    signal = {o: (occ == o) * rng.poisson(3, n) + rng.poisson(0.3, n) for o in ("teacher", "driver", "it_professional")}
    return pl.DataFrame({
        "subject_id": [f"P{i:05d}" for i in range(n)],
        "subject_type": ["person"] * n,
        "occupation": [o if i < 2000 else None for i, o in enumerate(occ)],
        "age": np.where(occ == "teacher", rng.integers(25, 45, n), rng.integers(22, 60, n)).astype(np.int32),
        "gender": rng.choice(["M", "F"], n),
        "local_hukou": rng.random(n) < 0.6,
        "n_licenses": rng.integers(0, 4, n).astype(np.int32),
        "is_legal_rep": rng.random(n) < 0.05,
        "views_180d": rng.integers(0, 20, n).astype(np.int32),
        "applies_180d": rng.integers(0, 5, n).astype(np.int32),
        "n_children": rng.integers(0, 3, n).astype(np.int32),
        "license_types": [["teacher_qualification"] if o == "teacher" and rng.random() < 0.5 else [] for o in occ],
        **{f"occ.{o}.count": signal.get(o, rng.poisson(0.3, n)).astype(np.int32) for o in OCCUPATIONS},
    })


class TaggerContract(EstimatorContract):
    """Mixin: every test here runs once per learned tagger class below."""

    registered = True

    @pytest.fixture
    def contract_data(self, persons):
        return persons

    def fit(self, m, data):
        return m.fit(data, AS_OF)

    def predict(self, m, data):
        return m.predict(data, AS_OF)

    def save_load(self, m, path):
        return type(m).load(m.save(path / m.name / m.version_))

    def assert_same(self, a, b) -> None:
        assert_frame_equal(a, b)

    def test_registered_by_name(self):
        if not self.registered:
            assert self.estimator_cls.name not in LEARNED_TAGGERS  # the batch runs it only where a test registers it
            return
        assert LEARNED_TAGGERS[self.estimator_cls.name] is self.estimator_cls
        assert make_tagger(self.estimator_cls.name, **self.params).get_params() == self.make().get_params()

    def test_predict_gives_tag_rows_of_its_codes_and_source(self, persons):
        m = self.make().fit(persons, AS_OF)
        rows = m.predict(persons, AS_OF)
        assert dict(rows.schema) == TAG_ROW_SCHEMA
        assert rows.height > 0
        assert set(rows["code"]) <= set(self.estimator_cls.codes)
        assert rows["source"].unique().to_list() == [f"model:{m.name}@{m.version_}"] == [m.source]
        assert rows["confidence"].is_between(0.0, 1.0).all()
        assert (rows["valid_from"] == AS_OF).all() and rows["valid_until"].is_null().all()
        assert rows["evidence_zh"].is_not_null().all() and rows["evidence_en"].is_not_null().all()
        assert not rows.select("subject_id", "code").is_duplicated().any()
        assert set(rows["subject_id"]) <= set(persons.filter(pl.col("occupation").is_null())["subject_id"])

    def test_without_labels_it_learns_nothing_and_tags_nobody(self, persons):
        unlabelled = persons.filter(pl.col("occupation").is_null())
        m = self.make()
        assert m.fit(unlabelled, AS_OF) is m and m.version_ is None
        assert_frame_equal(m.predict(unlabelled, AS_OF), pl.DataFrame(schema=TAG_ROW_SCHEMA))

    def test_event_aggregates_are_aggregates(self):
        assert all(isinstance(a, Aggregate) for a in self.make().event_aggregates())


class TestOccupationTagger(TaggerContract):
    estimator_cls = OccupationTagger
    params = {"n_estimators": 10, "presence_n_estimators": 10, "n_jobs": 1}


class TestDocsExampleTagger(TaggerContract):
    estimator_cls = TeacherByAgeTagger
    params = {"min_confidence": 0.2}
    registered = False


def test_every_registered_learned_tagger_is_covered():
    covered = {c.estimator_cls for c in TaggerContract.__subclasses__() if c.registered}
    assert covered == set(LEARNED_TAGGERS.values())


def test_a_registered_tagger_without_a_contract_case_is_caught(monkeypatch):
    monkeypatch.setitem(LEARNED_TAGGERS, TeacherByAgeTagger.name, TeacherByAgeTagger)
    with pytest.raises(AssertionError):
        test_every_registered_learned_tagger_is_covered()


def test_occupation_tagger_hyperparameters_are_the_classifiers_plus_its_threshold():
    tagger = OccupationTagger().get_params()
    assert tagger.pop("min_confidence") == 0.6
    assert tagger == OccupationClassifier().get_params()


def test_the_batch_takes_the_threshold_from_settings(settings):
    tagger = OccupationTagger.from_settings(settings.model_copy(update={"occupation_min_confidence": 0.8}))
    assert tagger.get_params() == OccupationTagger(min_confidence=0.8).get_params()


def test_registry_names_the_unknown_and_refuses_a_second_class_under_a_name():
    with pytest.raises(ConfigFileError, match="unknown learned tagger 'nope'.*occupation_lgbm"):
        make_tagger("nope")
    with pytest.raises(ConfigFileError, match="tagger 'occupation_lgbm': unknown parameter.*depth"):
        make_tagger("occupation_lgbm", depth=3)

    class Impostor(TeacherByAgeTagger):
        name = OccupationTagger.name

    with pytest.raises(ConfigFileError, match="already registered"):
        register_tagger(Impostor)
    assert LEARNED_TAGGERS[OccupationTagger.name] is OccupationTagger


def test_a_loaded_occupation_tagger_keeps_source_and_threshold(persons, tmp_path):
    m = OccupationTagger(min_confidence=0.7, n_estimators=10, presence_n_estimators=10, n_jobs=1).fit(persons, AS_OF)
    path = m.save(tmp_path / "occ")
    assert sorted(p.name for p in path.iterdir()) == ["meta.json", "model.txt", "presence.txt"]
    back = OccupationTagger.load(path)
    assert back.source == m.source and back.min_confidence == 0.7
    assert back.classifier_.n_trees_ == m.classifier_.n_trees_ and back.age_range_ == m.age_range_
    with pytest.raises(Exception, match="no saved occupation model"):
        OccupationTagger.load(tmp_path / "missing")


# -- the contract catches what it is meant to ------------------------------------------------------------------


class _FitKeepsAThreshold(TeacherByAgeTagger):
    def fit(self, frame, as_of):
        super().fit(frame, as_of)
        self.threshold = 0.5  # learned state without the trailing underscore
        return self


class _FitOverwritesAHyperparameter(TeacherByAgeTagger):
    def fit(self, frame, as_of):
        self.min_confidence = float(self.min_confidence) + 0.1
        return super().fit(frame, as_of)


class _PredictsUnfitted(TeacherByAgeTagger):
    def predict(self, frame, as_of):
        return pl.DataFrame(schema=TAG_ROW_SCHEMA)


class _LoadForgetsTheShares(TeacherByAgeTagger):
    @classmethod
    def load(cls, directory):
        tagger = super().load(directory)
        tagger.share_ = {band: 1.0 for band in tagger.share_}
        return tagger


class _Random(TeacherByAgeTagger):
    def fit(self, frame, as_of):
        super().fit(frame, as_of)
        self.share_ = {band: float(np.random.default_rng().random()) for band in self.share_}
        return self


@pytest.mark.parametrize("broken, check", [
    (_FitKeepsAThreshold, "test_fit_returns_self_and_only_adds_learned_attributes"),
    (_FitOverwritesAHyperparameter, "test_fit_returns_self_and_only_adds_learned_attributes"),
    (_PredictsUnfitted, "test_predict_before_fit_is_a_state_error"),
    (_LoadForgetsTheShares, "test_save_load_round_trip_predicts_the_same"),
    (_Random, "test_same_random_state_same_predictions"),
])
def test_the_contract_fails_a_broken_tagger(broken, check, persons, tmp_path):
    case = TestDocsExampleTagger()
    args = (lambda d: (persons, tmp_path / d)) if "round_trip" in check else (lambda d: (persons,))
    getattr(case, check)(*args("sound"))  # the sound example passes
    case.estimator_cls = broken
    with pytest.raises((AssertionError, pytest.fail.Exception)):
        getattr(case, check)(*args("broken"))


# -- the batch runs what is registered -------------------------------------------------------------------------


def test_the_batch_fits_saves_and_merges_every_registered_tagger(settings, db, monkeypatch):
    mini_city(settings, db)
    monkeypatch.setitem(LEARNED_TAGGERS, TeacherByAgeTagger.name, TeacherByAgeTagger)
    profiler.build_profiles(settings, db, AS_OF)
    # The mini city writes unknown occupations as "" where an export gives none: unknown, so the models tag them.
    profiles = profiler.scan_profiles(settings).with_columns(pl.col("occupation").replace("", None))
    clock = profiler.StageClock(None, taggers.TAG_STAGES)
    writer = taggers.store.TagBatchWriter(db, taggers.tags_parquet_path(settings))
    tagged = taggers.compute_tags(settings, profiles, taggers.check_rules(settings),
                                  taggers.load_taxonomy(settings.data_dir), AS_OF, clock, writer)
    summary = taggers.write_tags(db, tagged, writer, datetime.now(), clock)
    assert summary.occupation_model.startswith("occupation_lgbm@")
    tags = taggers.scan_tags(db).collect()
    assert tags.filter(pl.col("source") == f"model:{summary.occupation_model}").height > 0
    toy = tags.filter(pl.col("source").str.starts_with(f"model:{TeacherByAgeTagger.name}@"))
    assert toy.height > 0 and set(toy["code"]) == {"occupation.teacher"}
    version = toy["source"][0].rsplit("@", 1)[1]
    saved = Path(settings.models_dir) / TeacherByAgeTagger.name / version
    assert TeacherByAgeTagger.load(saved).version_ == version
    # one tag per subject and code across the two models and the rules
    assert not tags.select("subject_id", "code").is_duplicated().any()

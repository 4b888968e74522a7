"""Profiles: contents, eager/lazy parity, behaviour-only subjects, empty event log, atomic publish."""

from __future__ import annotations

import sqlite3
import threading
from datetime import date

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import profiler
from profiler.build import profile_frame
from testsupport.sample_city import SAMPLE_AS_OF, load_city, sample_city
from data.errors import StateError
from data.eventlog import scan_events
from data.registry import scan_table

AS_OF = date.fromisoformat(SAMPLE_AS_OF)


@pytest.fixture
def city(settings, db):
    load_city(settings, db, **sample_city())
    return settings, db


@pytest.fixture
def built(city):
    settings, db = city
    summary = profiler.build_profiles(settings, db, AS_OF)
    return settings, db, summary


def _frames(settings):
    return [scan_table(settings.home, t) for t in ("people", "enterprises", "licenses")] + [
        scan_events(settings.events_dir),
        scan_table(settings.home, "catalog"),
    ]


def _row(df: pl.DataFrame, subject_id: str) -> dict:
    return df.filter(pl.col("subject_id") == subject_id).to_dicts()[0]


def test_summary_counts_every_subject(built):
    _, _, summary = built
    assert (summary.persons, summary.enterprises, summary.unknown) == (12, 4, 1)
    assert summary.as_of == SAMPLE_AS_OF


def test_age_band_and_household(built):
    settings, _, _ = built
    df = profiler.scan_profiles(settings).collect()
    father = _row(df, "P1")
    assert father["age"] == 36 and father["age_band"] == "35-59"
    assert father["household_size"] == 5
    assert father["children_ages"] == [0, 6]
    assert father["n_children_under_6"] == 1
    assert father["youngest_child_birth_date"] == date(2026, 3, 1)
    # The grandfather lives with a newborn but is not its parent.
    grandpa = _row(df, "P5")
    assert grandpa["n_children"] == 0
    assert [m["child"] for m in grandpa["household_members"]] == [False, False, False, False]
    assert _row(df, "P4")["age_band"] == "6-13"


def test_licence_summary(built):
    settings, _, _ = built
    df = profiler.scan_profiles(settings).collect()
    p1 = _row(df, "P1")
    assert p1["license_types"] == ["hk_macau_permit"]
    assert p1["n_expiring_90d"] == 1 and p1["next_expiry"] == date(2027, 1, 15)
    assert p1["expiring_licenses"] == [{"license_type": "hk_macau_permit", "expires_on": date(2027, 1, 15)}]
    # A licence issued after as_of does not exist yet.
    assert _row(df, "P9")["n_licenses"] == 0


def test_behaviour_windows_respect_as_of_in_shanghai_time(built):
    settings, _, _ = built
    df = profiler.scan_profiles(settings).collect()
    p10 = _row(df, "P10")
    # The 2026-11-29T20:00Z view is 30 Nov in Shanghai: after as_of, so not counted.
    assert (p10["views_7d"], p10["views_30d"], p10["views_180d"], p10["events_total"]) == (1, 1, 1, 2)
    p9 = _row(df, "P9")
    assert (p9["views_30d"], p9["applies_30d"], p9["applies_7d"]) == (2, 1, 0)
    by_cat = {c["key"]: c for c in p9["by_category"]}
    assert by_cat["就业"]["views_30d"] == 2 and by_cat["就业"]["applies_30d"] == 1
    assert [d["key"] for d in p9["by_department"]] == ["市人社局"]


def test_enterprise_profile(built):
    settings, _, _ = built
    df = profiler.scan_profiles(settings).collect()
    e1 = _row(df, "E1")
    assert e1["subject_type"] == "enterprise" and e1["size_band"] == "micro" and e1["business_age_years"] == 0
    assert _row(df, "E4")["size_band"] == "large"
    assert _row(df, "P10")["is_legal_rep"] is True


def test_subject_only_in_events_gets_behaviour_profile(built):
    _, db, _ = built
    p = profiler.read_profile(db, "P999")
    assert p["subject_type"] == "unknown"
    assert (p["views_30d"], p["applies_30d"]) == (1, 1)
    assert "birth_date" not in p and "industry" not in p


def test_eager_and_lazy_inputs_give_identical_profiles(city):
    settings, _ = city
    lazy_frames = _frames(settings)
    eager_frames = [f.collect() for f in lazy_frames]
    lazy_out = profile_frame(*lazy_frames, AS_OF).collect()
    eager_out = profile_frame(*eager_frames, AS_OF).collect()
    assert lazy_out.height == 17
    assert_frame_equal(lazy_out, eager_out)


def test_empty_event_log_still_profiles_registries(settings, db):
    city = sample_city()
    city["events"] = []
    load_city(settings, db, **city)
    summary = profiler.build_profiles(settings, db, AS_OF)
    assert (summary.persons, summary.enterprises, summary.unknown) == (12, 4, 0)
    p = profiler.read_profile(db, "P9")
    assert p["events_total"] == 0 and p["last_activity"] is None


def test_read_profile_hides_sensitive_fields_unless_asked(built):
    _, db, _ = built
    plain = profiler.read_profile(db, "P6")
    assert "low_income" not in plain and "disability" not in plain
    full = profiler.read_profile(db, "P6", include_sensitive=True)
    assert full["low_income"] is True and full["disability"] is True
    assert "id_hash" not in full
    assert profiler.read_profile(db, "NOPE") is None


def test_scan_profiles_before_any_build_is_a_state_error(settings):
    with pytest.raises(StateError, match="yiwang profile"):
        profiler.scan_profiles(settings)


def test_failed_publish_leaves_previous_batch_in_place(built):
    settings, db, first = built

    def fail_at_publish(stage, done, total):
        if stage == "publish" and done < total:
            raise RuntimeError("crash during publish")

    with pytest.raises(RuntimeError):
        profiler.build_profiles(settings, db, date(2027, 6, 1), progress=fail_at_publish)
    p = profiler.read_profile(db, "P1")
    assert p["batch_id"] == first.batch_id and p["as_of"] == SAMPLE_AS_OF
    assert profiler.scan_profiles(settings).select(pl.col("as_of").unique()).collect().item() == AS_OF
    # The next build recovers from the leftover build table.
    again = profiler.build_profiles(settings, db, AS_OF)
    assert profiler.read_profile(db, "P1")["batch_id"] == again.batch_id


def test_readers_see_one_whole_batch_during_publish(built, monkeypatch):
    settings, db, _ = built
    monkeypatch.setattr(profiler, "BLOCK_SUBJECTS", 4)  # several blocks per batch
    seen: list[tuple[int, int]] = []
    stop = threading.Event()

    def reader():
        conn = sqlite3.connect(settings.db_path, timeout=30)
        while not stop.is_set():
            try:
                seen.append(profiler.served_profiles_shape(conn)[1:])
            except sqlite3.OperationalError:
                # The table was swapped under a prepared statement; SQLite re-prepares on the next call.
                continue
        conn.close()

    t = threading.Thread(target=reader)
    t.start()
    try:
        for _ in range(3):
            profiler.build_profiles(settings, db, AS_OF)
    finally:
        stop.set()
        t.join()
    assert seen, "the reader never ran"
    assert all(row == (17, 1) for row in seen), set(seen)


def test_every_subject_is_found_across_serving_blocks(built, monkeypatch):
    settings, db, _ = built
    whole = {sid: profiler.read_profile(db, sid, include_sensitive=True) for sid in
             profiler.scan_profiles(settings).select("subject_id").collect()["subject_id"]}
    monkeypatch.setattr(profiler, "BLOCK_SUBJECTS", 3)
    again = profiler.build_profiles(settings, db, AS_OF)
    assert profiler.served_profiles_shape(db.conn)[:2] == (6, 17)
    for sid, before in whole.items():
        after = profiler.read_profile(db, sid, include_sensitive=True)
        assert after == {**before, "batch_id": again.batch_id}
    ids = sorted(whole)
    # Ids before the first block, between two subjects and after the last: no profile, not a neighbour's.
    for missing in ("", ids[0][:-1], ids[0] + "0", ids[-1] + "Z", "~"):
        assert missing in whole or profiler.read_profile(db, missing) is None

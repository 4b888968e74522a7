"""Common sense a citizen would notice (issue 12, item 6): items whose conditions the catalogue does not carry.

- 老字号认定 (SH-SWW-0016): a brand must be at least 50 years old (沪商规〔2022〕3号 第五条); an enterprise founded
  this week never gets it, one founded in 1956 does;
- 涉外婚姻登记 / 涉港澳台居民婚姻登记 (SH-MZJ-0018/0019): the registries do not know the partner's nationality, so
  a newly-wed gets them only after showing interest in that very item themselves, never from the marriage tag or
  popularity;
- 居民身份证首次申领 (SH-GAJ-0001): a child's or teenager's first card (must apply at 16, may before), never an
  elderly resident's.

The feeds are built by the real batch (``recommender.train`` / ``recommend``) on a small city, and read through
``read_feed`` both personalised and with personalisation switched off (the read-time popular list).
"""

from __future__ import annotations

import shutil
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest

import recommender
from cities import mini_city
from data.citizen import write_preferences
from data.errors import ContractError
from data.eventlog import append_events
from data.reference import ITEM_CONDITIONS_FILE, load_catalog, load_item_conditions, load_reference
from data.registry import insert_rows, write_snapshot
from data.settings import load_settings
from recommender import candidates as C
from recommender.config import load_config
from recommender.feeds import current_version, read_feed, version_rows
from recommender.filters import eligible
from yiwang.migrations import open_db

DATA = Path(__file__).resolve().parents[1] / "data"

OLD_BRAND = "SH-SWW-0016"        # 老字号认定, for industries F|H
FOREIGN_MARRIAGE = "SH-MZJ-0018"  # 涉外婚姻登记
HKMT_MARRIAGE = "SH-MZJ-0019"     # 涉港澳台居民婚姻登记
FIRST_ID_CARD = "SH-GAJ-0001"     # 居民身份证首次申领

NEW_ENT, OLD_ENT = "E90001", "E90002"
ELDER, CHILD, NEWLYWED, NEWLYWED_HKMT = "P900001", "P900002", "P900003", "P900004"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """mini_city plus the subjects of the three cases, tagged, trained and recommended on as_of."""
    home = tmp_path_factory.mktemp("conditions") / "home"
    s = load_settings(home=home, id_hash_key="test-key")
    db = open_db(s.db_path)
    city = mini_city(s, db, n_people=300, n_ent=40, tagged=False)
    as_of = city["as_of"]
    conn = db.conn
    insert_rows(conn, "enterprises", pl.DataFrame({
        "enterprise_id": [NEW_ENT, OLD_ENT], "name": ["新开张餐饮", "百年老店"], "industry": ["H", "H"],
        "district": ["静安区", "静安区"],
        "founded_on": [(as_of - timedelta(days=3)).isoformat(), "1956-03-01"],
        "employees": [5, 5], "ingest_id": [2, 2]}))
    insert_rows(conn, "people", pl.DataFrame({
        "person_id": [ELDER, CHILD, NEWLYWED, NEWLYWED_HKMT],
        "birth_date": ["1950-01-01", "2016-06-01", "1995-04-01", "1994-09-01"],
        "gender": ["F", "M", "F", "M"], "district": ["静安区"] * 4, "local_hukou": [1] * 4, "ingest_id": [2] * 4}))
    wed = (as_of - timedelta(days=5)).isoformat()
    insert_rows(conn, "licenses", pl.DataFrame({
        "license_id": ["LWED1", "LWED2"], "holder_id": [NEWLYWED, NEWLYWED_HKMT],
        "license_type": "marriage_certificate", "issued_on": wed, "expires_on": [None, None], "ingest_id": [2, 2]}))
    conn.commit()
    for t in ("people", "enterprises", "licenses"):
        write_snapshot(s.home, t, conn)
    # 老字号认定 is what the city's enterprises looked at this month: popular enough to reach a new enterprise.
    now = datetime.combine(as_of, datetime.min.time(), tzinfo=timezone.utc)
    rows = []
    for i, eid in enumerate(city["ents"]["enterprise_id"]):
        rows.append((eid, OLD_BRAND, "view", now - timedelta(days=20 - i % 15)))
        rows.append((eid, OLD_BRAND, "consult", now - timedelta(days=10 - i % 8)))
    # The second newly-wed looked at the HK/Macau/Taiwan marriage registration themselves, two days ago.
    rows.append((NEWLYWED_HKMT, HKMT_MARRIAGE, "view", now - timedelta(days=2)))
    ev = pl.DataFrame(rows, schema={"subject_id": pl.String, "item_id": pl.String, "action": pl.String,
                                    "ts": pl.Datetime("us", "UTC")}, orient="row")
    ev = ev.with_columns(pl.format("x{}", pl.int_range(pl.len())).alias("event_id"), pl.lit("app").alias("channel"))
    append_events(s.events_dir, ev, 2)
    from taggers import profile_and_tag

    profile_and_tag(s, db, as_of)
    recommender.train(s, db, as_of)
    recommender.recommend(s, db, as_of)
    world = C.build_world(s, db, load_config(s), as_of)
    db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.conn.close()
    return home, world


@pytest.fixture
def served(built, tmp_path):
    home, world = built
    shutil.copytree(home, tmp_path / "home")
    s = load_settings(home=tmp_path / "home", id_hash_key="test-key")
    db = open_db(s.db_path)
    yield s, db, world
    db.conn.close()


def _batch_feed(db, subject_id: str) -> list[str]:
    rows = version_rows(db.conn, current_version(db.conn))
    return rows.filter(pl.col("subject_id") == subject_id).sort("rank")["item_id"].to_list()


def _eligible(world, subject_id: str, item_id: str) -> bool:
    sidx = world.subjects.filter(pl.col("subject_id") == subject_id)["sidx"]
    iidx = world.items.filter(pl.col("item_id") == item_id)["iidx"]
    pair = pl.DataFrame({"sidx": sidx, "iidx": iidx})
    return eligible(pair, world).height == 1


def _popular_feed(s, db, subject_id: str) -> list[str]:
    """The feed with personalisation switched off: the read-time popular list, filtered for the subject."""
    write_preferences(db.conn, subject_id, False, ["in_app"])
    feed = read_feed(db, s, subject_id, 200)
    assert not feed.personalised
    return [i.item_id for i in feed.items]


def test_an_enterprise_founded_this_week_never_gets_the_time_honoured_brand(served):
    s, db, world = served
    assert not _eligible(world, NEW_ENT, OLD_BRAND)
    assert OLD_BRAND not in _batch_feed(db, NEW_ENT)
    assert OLD_BRAND not in _popular_feed(s, db, NEW_ENT)
    # An enterprise of the same industry founded 70 years ago still may, and gets it from the same popularity.
    assert _eligible(world, OLD_ENT, OLD_BRAND)
    assert OLD_BRAND in _batch_feed(db, OLD_ENT)
    assert OLD_BRAND in _popular_feed(s, db, OLD_ENT)


def test_a_newly_wed_gets_cross_border_marriage_registration_only_after_looking_at_it(served):
    s, db, world = served
    wed = world.tags.join(world.subjects.select("sidx", "subject_id"), on="sidx").filter(
        pl.col("code") == "life_event.marriage")["subject_id"].to_list()
    assert {NEWLYWED, NEWLYWED_HKMT} <= set(wed)
    for item in (FOREIGN_MARRIAGE, HKMT_MARRIAGE):
        assert not _eligible(world, NEWLYWED, item)
        assert item not in _batch_feed(db, NEWLYWED)
    # Looking at the HK/Macau/Taiwan registration makes that very item eligible, not its foreign sibling.
    assert _eligible(world, NEWLYWED_HKMT, HKMT_MARRIAGE)
    assert HKMT_MARRIAGE in _batch_feed(db, NEWLYWED_HKMT)
    assert not _eligible(world, NEWLYWED_HKMT, FOREIGN_MARRIAGE)
    assert FOREIGN_MARRIAGE not in _batch_feed(db, NEWLYWED_HKMT)
    # Without personalisation the subject's own events are not used, so neither item is offered from popularity.
    popular = _popular_feed(s, db, NEWLYWED)
    assert popular and FOREIGN_MARRIAGE not in popular and HKMT_MARRIAGE not in popular


def test_an_elderly_resident_never_gets_a_first_resident_id_card(served):
    s, db, world = served
    assert not _eligible(world, ELDER, FIRST_ID_CARD)
    assert FIRST_ID_CARD not in _batch_feed(db, ELDER)
    assert FIRST_ID_CARD not in _popular_feed(s, db, ELDER)
    assert _eligible(world, CHILD, FIRST_ID_CARD)
    assert FIRST_ID_CARD in _batch_feed(db, CHILD)
    assert FIRST_ID_CARD in _popular_feed(s, db, CHILD)


# -- the reference file --------------------------------------------------------------------------------------


def test_the_shipped_conditions_name_catalogue_items_by_their_names():
    cond = load_item_conditions(DATA)
    assert set(cond["item_id"]) >= {OLD_BRAND, FOREIGN_MARRIAGE, HKMT_MARRIAGE, FIRST_ID_CARD}
    names = dict(load_catalog(DATA).select("item_id", "name").iter_rows())
    assert all(names[i] == n for i, n in cond.select("item_id", "name").iter_rows())
    assert cond["basis"].null_count() == 0
    load_reference(DATA)  # the cross-file check passes on the shipped files


def _copy_data(tmp_path: Path) -> Path:
    out = tmp_path / "data"
    shutil.copytree(DATA, out, ignore=shutil.ignore_patterns("build", "synth", "*.py"))
    return out


def _rewrite(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


@pytest.mark.parametrize("old,new,message", [
    (",50,", ",fifty,", "column 'min_enterprise_age_years': expected a whole number"),
    (",50,", ",-1,", "column 'min_enterprise_age_years': cannot be negative"),
    ("SH-SWW-0016,老字号认定,", "SH-SWW-0016,老字号认证,", "name '老字号认证' is not the catalogue's name '老字号认定'"),
    ("居民身份证首次申领,,17,,0,", "居民身份证首次申领,,,,0,", "column 'item_id': the row sets no condition"),
])
def test_a_broken_conditions_file_is_refused_with_file_line_and_column(tmp_path, old, new, message):
    data = _copy_data(tmp_path)
    _rewrite(data / ITEM_CONDITIONS_FILE, old, new)
    with pytest.raises(ContractError) as err:
        load_reference(data)
    assert ITEM_CONDITIONS_FILE in str(err.value) and message in str(err.value)
    assert "line " in str(err.value)


def test_a_condition_on_an_item_missing_from_the_catalogue_is_refused(tmp_path):
    data = _copy_data(tmp_path)
    _rewrite(data / ITEM_CONDITIONS_FILE, "SH-SWW-0016,老字号认定,", "SH-SWW-9999,老字号认定,")
    with pytest.raises(ContractError, match=r"line 5: column 'item_id': not in catalog\.csv \(got 'SH-SWW-9999'\)"):
        load_reference(data)

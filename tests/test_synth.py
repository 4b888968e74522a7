"""The synthetic city: contract, checksums, event rules, truth kept apart, realism, determinism."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from data.contract import DISTRICTS, is_valid_resident_id, is_valid_uscc
from data.errors import ConfigError, ContractError
from data.settings import REPO_ROOT
from data.synth import generate_city
from data.synth.ids import is_valid_resident_id as synth_id_valid
from data.synth.ids import is_valid_uscc as synth_uscc_valid

AS_OF = date(2026, 6, 1)
WINDOW_START = datetime(2024, 6, 1)  # 730 days before AS_OF
DATA_DIR = REPO_ROOT / "data"
CONTRACT = {
    "people": ["person_id", "birth_date", "gender", "district", "local_hukou", "id_number", "marital_status",
               "household_id", "occupation", "low_income", "disability"],
    "enterprises": ["enterprise_id", "name", "industry", "district", "founded_on", "employees", "uscc",
                    "legal_rep_id"],
    "licenses": ["license_id", "holder_id", "license_type", "issued_on", "expires_on"],
    "events": ["subject_id", "item_id", "action", "ts", "event_id", "channel"],
}
TRUTH_FILES = ("life_events.csv", "crowds.csv", "occupations.csv", "enterprise_traits.csv", "README.md")


def _read(path: Path) -> pl.DataFrame:
    return pl.read_csv(path, infer_schema=False)


@pytest.fixture(scope="module")
def city(tmp_path_factory) -> Path:
    """A 2,500-person, 300-enterprise city on the real reference data."""
    out = tmp_path_factory.mktemp("city")
    summary = generate_city(out, 2500, 300, 11, AS_OF, data_dir=DATA_DIR)
    assert summary.people == 2500 and summary.enterprises == 300
    return out


@pytest.fixture(scope="module")
def tables(city) -> dict[str, pl.DataFrame]:
    t = {name: _read(city / "export" / f"{name}.csv") for name in CONTRACT}
    t["events"] = t["events"].with_columns(pl.col("ts").str.to_datetime("%Y-%m-%dT%H:%M:%S"))
    people = t["people"].with_columns(pl.col("birth_date").str.to_date())
    month_day = pl.col("birth_date").dt.month().cast(pl.Int32) * 100 + pl.col("birth_date").dt.day().cast(pl.Int32)
    t["people"] = people.with_columns(
        (AS_OF.year - pl.col("birth_date").dt.year().cast(pl.Int32)
         - (month_day > AS_OF.month * 100 + AS_OF.day).cast(pl.Int32)).alias("age")
    )
    t["licenses"] = t["licenses"].with_columns(pl.col("issued_on").str.to_date(), pl.col("expires_on").str.to_date())
    return t


@pytest.fixture(scope="module")
def truth(city) -> dict[str, pl.DataFrame]:
    return {name.removesuffix(".csv"): _read(city / "truth" / name) for name in TRUTH_FILES if name.endswith(".csv")}


def test_export_has_the_contract_columns_and_the_catalogue(city, tables):
    for name, columns in CONTRACT.items():
        header = (city / "export" / f"{name}.csv").read_text(encoding="utf-8").split("\n", 1)[0]
        assert header.split(",") == columns, name
        assert tables[name].height > 0, name
    assert (city / "export" / "catalog.csv").read_bytes() == (DATA_DIR / "catalog.csv").read_bytes()
    assert tables["people"]["person_id"].to_list()[:2] == ["P0000001", "P0000002"]
    assert tables["enterprises"]["enterprise_id"][0] == "E000001"
    assert tables["people"]["household_id"].str.starts_with("H").all()
    assert tables["licenses"]["license_id"].str.starts_with("L").all()
    for name, key in (("people", "person_id"), ("enterprises", "enterprise_id"), ("licenses", "license_id")):
        assert tables[name][key].n_unique() == tables[name].height


def test_resident_ids_are_valid_and_match_the_person(tables):
    people = tables["people"]
    with_id = people.filter(pl.col("id_number").is_not_null())
    assert 0.92 < with_id.height / people.height < 0.98
    assert with_id["id_number"].n_unique() == with_id.height
    for row in with_id.iter_rows(named=True):
        number = row["id_number"]
        assert is_valid_resident_id(number) and synth_id_valid(number), number
        assert number[6:14] == row["birth_date"].strftime("%Y%m%d")
        assert int(number[16]) % 2 == (1 if row["gender"] == "M" else 0)
    locals_ = with_id.filter(pl.col("local_hukou") == "true")
    assert locals_["id_number"].str.starts_with("310").all()


def test_usccs_are_valid_and_legal_reps_are_people(tables):
    ent = tables["enterprises"]
    codes = ent["uscc"].drop_nulls()
    assert codes.len() > 0.9 * ent.height and codes.n_unique() == codes.len()
    assert all(is_valid_uscc(c) and synth_uscc_valid(c) for c in codes)
    assert ent["legal_rep_id"].is_in(tables["people"]["person_id"].implode()).all()
    assert ent["industry"].is_in(list("ABCDEFGHIJKLMNOPQRST")).all()


def test_the_checksum_validators_reject_a_wrong_check_character():
    assert synth_id_valid("11010519491231002X")
    assert not synth_id_valid("110105194912310021")
    assert synth_uscc_valid("91350100M000100Y43")
    assert not synth_uscc_valid("91350100M000100Y44")


def test_events_stay_in_the_two_years_before_as_of(tables):
    ev = tables["events"]
    assert ev["ts"].max() < datetime(AS_OF.year, AS_OF.month, AS_OF.day)
    assert ev["ts"].min() >= WINDOW_START
    assert set(ev["action"].unique()) == {"view", "click", "favorite", "consult", "apply", "complete"}
    assert set(ev["channel"].unique()) <= {"web", "app", "window", "kiosk"}
    ids = ev["event_id"].drop_nulls()
    assert 0.93 < ids.len() / ev.height < 0.97
    assert ids.n_unique() == ids.len()
    # About 27 events per subject by default.
    per_subject = ev.height / (tables["people"].height + tables["enterprises"].height)
    assert 20 < per_subject < 35


def test_every_apply_follows_a_view_of_the_same_item(tables):
    ev = tables["events"]
    first = ev.group_by("subject_id", "item_id", "action").agg(pl.col("ts").min())
    applies = first.filter(pl.col("action") == "apply")
    views = first.filter(pl.col("action") == "view").select("subject_id", "item_id", pl.col("ts").alias("view_ts"))
    joined = applies.join(views, on=["subject_id", "item_id"], how="left")
    assert applies.height > 100
    assert joined.filter(pl.col("view_ts").is_null() | (pl.col("view_ts") >= pl.col("ts"))).height == 0


def test_once_only_items_are_never_completed_twice(tables):
    catalog = _read(DATA_DIR / "catalog.csv")
    once = catalog.filter(pl.col("once_per_subject") == "1")["item_id"]
    done = tables["events"].filter((pl.col("action") == "complete") & pl.col("item_id").is_in(once.implode()))
    assert done.height > 0
    assert done.group_by("subject_id", "item_id").len()["len"].max() == 1


def test_truth_is_kept_out_of_the_export(city, tables):
    exported = {p.name for p in (city / "export").iterdir()}
    assert exported == {f"{t}.csv" for t in (*CONTRACT, "catalog")}
    for name in TRUTH_FILES:
        assert (city / "truth" / name).is_file()
    readme = (city / "truth" / "README.md").read_text(encoding="utf-8")
    for name in TRUTH_FILES[:-1]:
        assert name in readme
    # Registry occupations are a minority of working-age people: the rest must be inferred.
    working = tables["people"].filter((pl.col("age") >= 23) & (pl.col("age") < 60))
    assert 0.1 < working["occupation"].is_not_null().mean() < 0.35


def test_age_pyramid_and_districts_are_plausible(tables):
    people = tables["people"]
    age = people["age"]
    assert 0.07 < (age < 14).mean() < 0.16
    assert 0.18 < (age >= 60).mean() < 0.32
    assert 0.5 < ((age >= 15) & (age < 60)).mean() < 0.72
    assert age.max() <= 105 and age.min() >= 0
    assert 0.5 < (people["local_hukou"] == "true").mean() < 0.7
    assert 0.005 < (people["low_income"] == "true").mean() < 0.04
    assert 0.015 < (people["disability"] == "true").mean() < 0.05
    counts = people["district"].value_counts(sort=True)
    assert set(counts["district"]) == set(DISTRICTS)
    assert counts["district"][0] == "浦东新区"
    assert 2.0 < people.height / people["household_id"].n_unique() < 3.0
    # Spouses share a household and are both married.
    married = people.filter(pl.col("marital_status") == "married")
    assert married.height > 0.4 * (age >= 22).sum()


def test_expiring_soon_and_renewed_licences_exist(tables):
    lic = tables["licenses"]
    assert lic.filter(pl.col("expires_on") < pl.col("issued_on")).height == 0
    assert lic["issued_on"].max() < AS_OF
    soon = lic.filter((pl.col("expires_on") >= AS_OF) & (pl.col("expires_on") < AS_OF + timedelta(days=30)))
    within_90 = lic.filter((pl.col("expires_on") >= AS_OF) & (pl.col("expires_on") < AS_OF + timedelta(days=90)))
    assert soon.height > 0 and within_90.height > soon.height
    assert {"hk_macau_permit", "residence_permit"} <= set(within_90["license_type"])
    # A licence that expired in the window was usually renewed: a newer one of the same type, later expiry.
    expired = lic.filter(pl.col("expires_on").is_between(AS_OF - timedelta(days=700), AS_OF - timedelta(days=1)))
    newer = expired.join(lic, on=["holder_id", "license_type"], suffix="_new").filter(
        (pl.col("issued_on_new") > pl.col("issued_on")) & (pl.col("expires_on_new") > pl.col("expires_on"))
    )
    share = newer.select("license_id").n_unique() / expired.height
    assert 0.7 < share < 1.0  # most renew, some lapse
    holders = set(tables["people"]["person_id"]) | set(tables["enterprises"]["enterprise_id"])
    assert set(lic["holder_id"]) <= holders
    assert lic.filter(pl.col("license_type") == "business_licence").height == tables["enterprises"].height


def test_registry_backed_truth_agrees_with_the_registries(tables, truth):
    people, lic, life = tables["people"], tables["licenses"], truth["life_events"].with_columns(pl.col("date").str.to_date())
    assert life["date"].min() >= WINDOW_START.date() and life["date"].max() < AS_OF
    marriages = life.filter(pl.col("code") == "life_event.marriage")
    assert marriages.height > 0
    certs = lic.filter(pl.col("license_type") == "marriage_certificate").select(
        pl.col("holder_id").alias("subject_id"), pl.col("issued_on").alias("date"))
    assert marriages.join(certs, on=["subject_id", "date"], how="anti").height == 0
    assert people.filter(pl.col("person_id").is_in(marriages["subject_id"].implode()))["marital_status"].eq("married").all()
    # Each newborn holds a birth certificate issued on its birthday and lives with a parent tagged with the birth.
    newborns = people.filter(pl.col("birth_date") >= WINDOW_START.date())
    born = newborns.join(lic.filter(pl.col("license_type") == "birth_medical_certificate"),
                         left_on=["person_id", "birth_date"], right_on=["holder_id", "issued_on"])
    assert newborns.height > 0 and born.height == newborns.height
    births = life.filter(pl.col("code") == "life_event.birth").join(
        people.select(pl.col("person_id").alias("subject_id"), "household_id"), on="subject_id")
    assert newborns.join(births, left_on=["household_id", "birth_date"], right_on=["household_id", "date"],
                         how="anti").height == 0
    crowds = truth["crowds"]
    elderly = set(crowds.filter(pl.col("code") == "crowd.elderly")["subject_id"])
    assert elderly == set(people.filter(pl.col("age") >= 60)["person_id"])
    non_local = set(crowds.filter(pl.col("code") == "crowd.non_local")["subject_id"])
    assert non_local == set(people.filter(pl.col("local_hukou") == "false")["person_id"])
    known = people.filter(pl.col("occupation").is_not_null()).select("person_id", "occupation")
    assert known.join(truth["occupations"], on=["person_id", "occupation"], how="anti").height == 0
    codes = set(life["code"])
    assert {"life_event.birth", "life_event.marriage", "life_event.retirement", "life_event.job_seeking",
            "life_event.home_purchase", "life_event.school_entry"} <= codes


def test_latent_facts_drive_behaviour(tables, truth):
    """Occupations and life events leave learnable traces: members browse their items far more."""
    catalog = _read(DATA_DIR / "catalog.csv")
    ev = tables["events"]
    occ = truth["occupations"]
    people = tables["people"].select("person_id")
    for code in ("teacher", "driver", "medical_worker", "office_worker"):
        items = catalog.filter(pl.col("occupations").str.contains(f"occupation.{code}", literal=True))["item_id"]
        members = occ.filter(pl.col("occupation") == code)["person_id"]
        counts = ev.filter(pl.col("item_id").is_in(items.implode())).group_by("subject_id").len()
        per_person = (
            people.join(counts, left_on="person_id", right_on="subject_id", how="left")
            .with_columns(pl.col("len").fill_null(0), pl.col("person_id").is_in(members.implode()).alias("member"))
            .group_by("member").agg(pl.col("len").mean())
        )
        mean = dict(per_person.iter_rows())
        assert members.len() > 5
        assert mean[True] > 5 * mean[False], code
    wed = truth["life_events"].filter(pl.col("code") == "life_event.marriage")
    items = catalog.filter(pl.col("life_events").str.contains("life_event.marriage", literal=True))["item_id"]
    applied = set(ev.filter(pl.col("item_id").is_in(items.implode()) & (pl.col("action") == "apply"))["subject_id"])
    wed_ids = set(wed["subject_id"])
    rate_wed = len(applied & wed_ids) / len(wed_ids)
    rate_other = len(applied - wed_ids) / (people.height - len(wed_ids))
    assert rate_wed > 0.5 and rate_wed > 10 * rate_other


def test_enterprise_traits_are_registry_consistent(tables, truth):
    traits = truth["enterprise_traits"]
    ent = tables["enterprises"].with_columns(pl.col("founded_on").str.to_date())
    new = set(traits.filter(pl.col("code") == "enterprise.new_business")["enterprise_id"])
    assert new == set(ent.filter(pl.col("founded_on") > AS_OF - timedelta(days=366))["enterprise_id"])
    assert 0 < len(new) < 0.3 * ent.height
    industry = traits.filter(pl.col("code").str.starts_with("enterprise.industry_")).with_columns(
        pl.col("code").str.slice(-1).alias("industry"))
    assert industry.join(ent, on=["enterprise_id", "industry"], how="anti").height == 0
    sizes = traits.filter(pl.col("code").str.starts_with("enterprise.size_"))
    assert sizes["enterprise_id"].n_unique() == ent.height == sizes.height
    # 1 June is inside the reporting period: who has not filed this year's annual report is due.
    due = set(traits.filter(pl.col("code") == "enterprise.annual_report_due")["enterprise_id"])
    catalog = _read(DATA_DIR / "catalog.csv")
    report_items = catalog.filter(pl.col("crowds").str.contains("enterprise.annual_report_due", literal=True))["item_id"]
    filed = set(tables["events"].filter(
        pl.col("item_id").is_in(report_items.implode()) & (pl.col("action") == "complete")
        & (pl.col("ts") >= datetime(AS_OF.year, 1, 1))
    )["subject_id"])
    assert due and filed and not (due & filed)
    assert due <= set(ent.filter(pl.col("founded_on") < date(AS_OF.year, 1, 1))["enterprise_id"])
    food = set(traits.filter(pl.col("code") == "enterprise.food_catering")["enterprise_id"])
    food_licence = set(tables["licenses"].filter(pl.col("license_type") == "food_business_licence")["holder_id"])
    assert food == food_licence


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path):
    def files(out: Path) -> dict[str, bytes]:
        return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}

    args = dict(people=800, enterprises=80, as_of=AS_OF, data_dir=DATA_DIR)
    generate_city(tmp_path / "a", seed=5, **args)
    generate_city(tmp_path / "b", seed=5, **args)
    generate_city(tmp_path / "c", seed=6, **args)
    a, b, c = files(tmp_path / "a"), files(tmp_path / "b"), files(tmp_path / "c")
    assert len(a) == 10 and a == b
    assert a["export/events.csv"] != c["export/events.csv"]


def test_parquet_export_is_deterministic_and_typed(tmp_path):
    for name in ("a", "b"):
        generate_city(tmp_path / name, 600, 60, 3, AS_OF, fmt="parquet", data_dir=DATA_DIR)
    for table in (*CONTRACT, "catalog"):
        a, b = (tmp_path / n / "export" / f"{table}.parquet" for n in ("a", "b"))
        assert a.read_bytes() == b.read_bytes(), table
    people = pl.read_parquet(tmp_path / "a" / "export" / "people.parquet")
    assert people.schema["birth_date"] == pl.Date and people.schema["local_hukou"] == pl.Boolean
    events = pl.read_parquet(tmp_path / "a" / "export" / "events.parquet")
    assert events.columns == CONTRACT["events"] and events.schema["ts"] == pl.Datetime("us")


TINY_CATALOG = """item_id,name,department,audience,category,life_events,crowds,occupations,industries,once_per_subject,min_age,max_age,local_hukou_only,renews_license
X-1,结婚登记,民政局,person,婚姻,life_event.marriage,,,,1,20,,0,
X-2,浦东新区 结婚登记,浦东新区民政局,person,婚姻,life_event.marriage,,,,1,20,,0,
X-3,出生医学证明,卫健委,person,妇幼,life_event.birth|life_event.second_child,crowd.parent_young_child,,,1,,,0,
X-4,退休审批,人社局,person,养老,life_event.retirement,crowd.elderly,,,0,45,,0,
X-5,教师资格认定,教委,person,教师,,,occupation.teacher,,0,18,,0,
X-6,驾驶证换证,交警,person,驾驶证,,,occupation.driver,,0,18,,0,driving_licence
X-7,港澳通行证换发,出入境,person,出入境,,,,,0,,,0,hk_macau_permit
X-8,居住证签注,公安局,person,居住证,,crowd.non_local,,,0,,,0,residence_permit
X-9,求职登记,人社局,person,就业,life_event.job_seeking|life_event.graduation,,,,0,16,,1,
X-10,公积金提取（购房）,公积金中心,person,公积金,life_event.home_purchase,,,,0,,,0,
X-11,企业设立登记,市场监管局,enterprise,企业登记,,enterprise.new_business,,,1,,,0,
X-12,企业年报,市场监管局,enterprise,年报,,enterprise.annual_report_due,,,0,,,0,
X-13,食品经营许可证延续,市场监管局,enterprise,食品,,enterprise.food_catering,,H,0,,,0,food_business_licence
X-14,高新技术企业认定,科委,enterprise,科技,,enterprise.high_tech_candidate,,C|I|M,0,,,0,
X-15,社保查询,人社局,person,社保,,,,,0,,,0,
"""
TINY_LICENSES = """license_type,name_zh,name_en,holder,validity_years,renewal_item_id
resident_id_card,居民身份证,Resident identity card,person,20,
hk_macau_permit,往来港澳通行证,HK/Macau permit,person,10,X-7
residence_permit,居住证,Residence permit,person,1,X-8
driving_licence,驾驶证,Driving licence,person,6,X-6
marriage_certificate,结婚证,Marriage certificate,person,,
birth_medical_certificate,出生医学证明,Birth medical certificate,person,,
business_licence,营业执照,Business licence,enterprise,,
food_business_licence,食品经营许可证,Food business licence,enterprise,5,X-13
space_station_pass,空间站通行证,Space station pass,person,2,
"""


def test_items_are_chosen_by_their_tags_not_their_ids(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "catalog.csv").write_text(TINY_CATALOG, encoding="utf-8")
    (data / "license_types.csv").write_text(TINY_LICENSES, encoding="utf-8")
    summary = generate_city(tmp_path / "out", 1500, 150, 2, AS_OF, data_dir=data)
    assert summary.skipped_license_types == ["space_station_pass"]
    ev = _read(tmp_path / "out" / "export" / "events.csv")
    people = _read(tmp_path / "out" / "export" / "people.csv")
    lic = _read(tmp_path / "out" / "export" / "licenses.csv")
    assert set(ev["item_id"]) <= {f"X-{i}" for i in range(1, 16)}
    # The Pudong variant only serves people living in Pudong.
    pudong = ev.filter(pl.col("item_id") == "X-2").join(people, left_on="subject_id", right_on="person_id")
    assert pudong.height > 0 and (pudong["district"] == "浦东新区").all()
    # Renewals end with a completed renewal item; hukou-only items only for locals.
    assert ev.filter((pl.col("item_id") == "X-7") & (pl.col("action") == "complete")).height > 0
    hukou_only = ev.filter(pl.col("item_id") == "X-9").join(people, left_on="subject_id", right_on="person_id")
    assert (hukou_only["local_hukou"] == "true").all()
    assert set(lic["license_type"]) <= {"resident_id_card", "hk_macau_permit", "residence_permit", "driving_licence",
                                        "marriage_certificate", "birth_medical_certificate", "business_licence",
                                        "food_business_licence"}
    # Age limits hold at the time of the event (min_age 45 for X-4).
    x4 = ev.filter(pl.col("item_id") == "X-4").join(people, left_on="subject_id", right_on="person_id")
    assert x4.height > 0
    assert (x4["ts"].str.slice(0, 10).str.to_date() >= x4["birth_date"].str.to_date().dt.offset_by("45y")).all()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(people=0), "--people"),
        (dict(enterprises=-1), "--enterprises"),
        (dict(seed=-3), "--seed"),
        (dict(fmt="xlsx"), "--format"),
        (dict(as_of="2026-13-01"), "--as-of"),
        (dict(events_per_person=-1.0), "--events-per-person"),
        (dict(events_per_person=float("nan")), "--events-per-person"),
    ],
)
def test_bad_arguments_give_a_clear_error(tmp_path, kwargs, message):
    args = dict(out_dir=tmp_path / "x", people=10, enterprises=1, seed=1, as_of=AS_OF, data_dir=DATA_DIR)
    args.update(kwargs)
    with pytest.raises(ConfigError, match=message):
        generate_city(**args)
    assert not (tmp_path / "x").exists()


def test_missing_reference_data_names_the_file(tmp_path):
    with pytest.raises(ContractError, match="catalog.csv"):
        generate_city(tmp_path / "x", 10, 1, 1, AS_OF, data_dir=tmp_path / "nowhere")


def test_events_per_person_scales_the_log(tmp_path):
    # The latent episodes are a floor (about 20 per subject); noise tops the log up to the target.
    stages = []
    small = generate_city(tmp_path / "a", 1000, 100, 1, AS_OF, data_dir=DATA_DIR, events_per_person=5,
                          progress=lambda stage, done, total: stages.append((stage, done, total)))
    assert ("registries", 4, 4) in stages and stages[-1] == ("events", 1, 1)
    big = generate_city(tmp_path / "b", 1000, 100, 1, AS_OF, data_dir=DATA_DIR, events_per_person=60)
    assert small.events < 30 * 1100
    assert 55 * 1100 < big.events < 65 * 1100


def test_cli_writes_a_city_and_prints_json(tmp_path, monkeypatch):
    from yiwang.cli import app

    monkeypatch.setenv("YIWANG_DATA_DIR", str(DATA_DIR))
    result = CliRunner().invoke(
        app,
        ["--home", str(tmp_path / "home"), "synth", "--people", "300", "--enterprises", "30", "--seed", "4",
         "--as-of", "2026-06-01", "--out", str(tmp_path / "city"), "--format", "parquet", "--json"],
    )
    assert result.exit_code == 0, result.output
    assert '"people": 300' in result.output
    assert (tmp_path / "city" / "export" / "events.parquet").is_file()
    assert (tmp_path / "city" / "truth" / "life_events.csv").is_file()


@pytest.mark.parametrize("people, enterprises", [(1, 0), (3, 2)])
def test_tiny_cities_still_follow_the_contract(tmp_path, people, enterprises):
    summary = generate_city(tmp_path, people, enterprises, 1, AS_OF, data_dir=DATA_DIR)
    assert (summary.people, summary.enterprises) == (people, enterprises)
    for name, columns in CONTRACT.items():
        frame = _read(tmp_path / "export" / f"{name}.csv")
        assert frame.columns == columns, name
    assert _read(tmp_path / "export" / "enterprises.csv").height == enterprises

"""The shipped reference data (data/) is complete and self-consistent, and its loaders reject malformed files."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import polars as pl
import pytest

from data.errors import ContractError
from data.reference import (
    CATALOG_SCHEMA,
    catalog_tag_codes,
    load_catalog,
    load_license_types,
    load_reference,
    load_taxonomy,
    reference_problems,
)

DATA = Path(__file__).resolve().parent.parent / "data"

DISTRICTS = {
    "310101": "黄浦区", "310104": "徐汇区", "310105": "长宁区", "310106": "静安区", "310107": "普陀区",
    "310109": "虹口区", "310110": "杨浦区", "310112": "闵行区", "310113": "宝山区", "310114": "嘉定区",
    "310115": "浦东新区", "310116": "金山区", "310117": "松江区", "310118": "青浦区", "310120": "奉贤区",
    "310151": "崇明区",
}

# The fixed vocabulary of docs/architecture.md ("Tag codes"); the taxonomy must hold exactly these.
ARCHITECTURE_CODES = (
    [f"life_event.{c}" for c in "birth second_child school_entry graduation job_seeking home_purchase marriage "
     "retirement bereavement".split()]
    + [f"crowd.{c}" for c in "child elderly hardship disabled parent_young_child non_local".split()]
    + [f"occupation.{c}" for c in "student teacher security_guard medical_worker driver it_professional "
       "self_employed office_worker".split()]
    + [f"enterprise.{c}" for c in "new_business high_tech_candidate food_catering annual_report_due size_micro "
       "size_small size_medium size_large".split()]
    + [f"enterprise.industry_{letter}" for letter in "ABCDEFGHIJKLMNOPQRST"]
)


@pytest.fixture(scope="module")
def ref():
    return load_reference(DATA)


@pytest.fixture(scope="module")
def catalog(ref):
    # A "service" is one item of a city department, or one district-run service counted once for all districts.
    return ref.catalog.with_columns(service=pl.col("item_id").str.replace(r"^SH\d{6}-", "SH-D-"))


def _services_with(catalog: pl.DataFrame, code: str) -> int:
    tags = catalog_tag_codes(catalog).join(catalog.select("item_id", "service"), on="item_id")
    return tags.filter(pl.col("code") == code)["service"].n_unique()


# -- the shipped files -----------------------------------------------------------------------------------------


def test_shipped_files_load_typed(ref):
    assert ref.catalog.schema == pl.Schema(CATALOG_SCHEMA)
    assert ref.license_types.schema["validity_years"] == pl.Int64
    assert ref.taxonomy.schema["sensitive"] == pl.Boolean
    assert ref.taxonomy.schema["default_validity_days"] == pl.Int64
    assert reference_problems(ref) == []


def test_catalog_size_departments_and_unique_ids(catalog):
    assert catalog.height >= 1300
    assert catalog["item_id"].is_unique().all()
    assert catalog["name"].is_unique().all()  # district variants carry the district in their name
    assert catalog["item_id"].str.contains(r"^SH(\d{6})?-[A-Z]+-\d{4}$").all()
    city = catalog.filter(pl.col("item_id").str.starts_with("SH-"))
    assert city["department"].n_unique() >= 38
    assert set(catalog["audience"]) == {"person", "enterprise"}


def test_every_district_runs_every_district_service(catalog):
    district = catalog.filter(~pl.col("item_id").str.starts_with("SH-")).with_columns(
        admin=pl.col("item_id").str.slice(2, 6), district=pl.col("name").str.split(" ").list.first()
    )
    assert set(district["admin"]) == set(DISTRICTS)
    assert district.select(pl.col("admin").replace_strict(DISTRICTS) == pl.col("district")).to_series().all()
    assert district.select(pl.col("department").str.starts_with(pl.col("district"))).to_series().all()
    per_service = district.group_by("service").agg(pl.col("admin").n_unique())
    assert (per_service["admin"] == 16).all()
    assert per_service.height >= 50


def test_taxonomy_is_exactly_the_architecture_vocabulary(ref):
    tax = ref.taxonomy
    assert sorted(tax["code"]) == sorted(ARCHITECTURE_CODES)
    sensitive = set(tax.filter(pl.col("sensitive"))["code"])
    assert sensitive == {"crowd.hardship", "crowd.disabled"}
    validity = dict(zip(tax["code"], tax["default_validity_days"]))
    assert validity["life_event.marriage"] == 180
    assert validity["life_event.birth"] == 365
    assert validity["life_event.job_seeking"] == 90
    assert all(validity[c] is None for c in ARCHITECTURE_CODES if c.startswith(("crowd.", "occupation.")))
    subject = dict(zip(tax["code"], tax["subject_type"]))
    assert all((subject[c] == "enterprise") == c.startswith("enterprise.") for c in ARCHITECTURE_CODES)


def test_every_tag_that_can_give_a_reason_has_its_phrase(ref):
    """Feed reasons name a tag by the taxonomy's phrase: every non-sensitive tag an item declares has one in both
    languages, and no sensitive tag has one (reasons never name them)."""
    tax = ref.taxonomy
    can_give = catalog_tag_codes(ref.catalog).select("code").unique().join(tax, on="code")
    missing = can_give.filter(~pl.col("sensitive") & (pl.col("reason_zh").is_null() | pl.col("reason_en").is_null()))
    assert missing["code"].to_list() == []
    assert can_give.filter(~pl.col("sensitive")).height > 40
    assert tax.filter(pl.col("sensitive") & (pl.col("reason_zh").is_not_null() | pl.col("reason_en").is_not_null())).height == 0
    assert tax.filter(pl.col("sensitive")).height == 2
    marriage = tax.filter(pl.col("code") == "life_event.marriage").row(0, named=True)
    assert (marriage["reason_zh"], marriage["reason_en"]) == ("因为您近期登记结婚", "Because you recently married")


def test_a_reason_for_a_sensitive_tag_is_refused(data_copy):
    path = data_copy / "tag_taxonomy.csv"
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[12].startswith("crowd.hardship,") and lines[12].endswith(",,")
    lines[12] = lines[12][:-2] + ",因为您属于「帮困对象」,"
    path.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(ContractError, match=r"tag_taxonomy\.csv, line 13: column 'reason_zh': a sensitive tag never"):
        load_taxonomy(data_copy)


def test_licence_types_and_renewals(ref):
    lt = ref.license_types
    codes = set(lt["license_type"])
    assert lt.height >= 17
    assert {"resident_id_card", "hk_macau_permit", "taiwan_permit", "passport", "driving_licence",
            "residence_permit", "business_licence", "food_business_licence"} <= codes
    validity = dict(zip(lt["license_type"], lt["validity_years"]))
    assert validity["hk_macau_permit"] == 10 and validity["passport"] == 10
    assert validity["driving_licence"] == 6 and validity["residence_permit"] == 1
    # The named renewal item really renews that licence.
    named = lt.drop_nulls("renewal_item_id").join(
        ref.catalog.select(renewal_item_id="item_id", renews="renews_license"), on="renewal_item_id"
    )
    assert (named["renews"] == named["license_type"]).all()
    # Every licence that expires can be renewed through at least one item.
    renewable = set(ref.catalog["renews_license"].drop_nulls())
    expiring = set(lt.filter(pl.col("validity_years").is_not_null())["license_type"])
    assert expiring <= renewable


def test_tags_sit_on_the_right_audience(ref):
    tags = catalog_tag_codes(ref.catalog).join(ref.catalog.select("item_id", "audience"), on="item_id")
    wrong = tags.filter((pl.col("code").str.starts_with("enterprise.")) != (pl.col("audience") == "enterprise"))
    assert wrong.height == 0, wrong.head(5)


def test_every_tag_can_be_revealed_by_behaviour(ref, catalog):
    # Taggers infer occupations, life events and crowds from which items a person uses, so each needs a few items.
    for code in ARCHITECTURE_CODES:
        if code.startswith("occupation."):
            assert _services_with(catalog, code) >= 2, code
        elif code.startswith(("life_event.", "crowd.")):
            assert _services_with(catalog, code) >= 3, code
    assert set(catalog["industries"].drop_nulls().str.split("|").explode()) == set("ABCDEFGHIJKLMNOPQRST")


REQUIRED_ITEMS = [
    # (name fragment, tag code or None, extra column checks)
    ("结婚登记", "life_event.marriage", {"once_per_subject": True}),
    ("出生医学证明办理", "life_event.birth", {}),
    ("新生儿户口登记", "life_event.birth", {}),
    ("生育医疗费", "life_event.birth", {}),
    ("生育津贴", "life_event.birth", {}),
    ("再生育登记", "life_event.second_child", {}),
    ("小学入学登记", "life_event.school_entry", {"min_age": 5, "max_age": 7}),
    ("初中入学登记", "life_event.school_entry", {}),
    ("住房公积金提取（购买自住住房）", "life_event.home_purchase", {}),
    ("不动产登记（存量房买卖转移登记）", "life_event.home_purchase", {}),
    ("往来港澳通行证换发", None, {"renews_license": "hk_macau_permit"}),
    ("往来港澳通行证再次签注", None, {"renews_license": "hk_macau_permit"}),
    ("往来台湾通行证换发", None, {"renews_license": "taiwan_permit"}),
    ("普通护照换发", None, {"renews_license": "passport"}),
    ("居民身份证换领", None, {"renews_license": "resident_id_card"}),
    ("机动车驾驶证有效期满换证", None, {"renews_license": "driving_licence"}),
    ("上海市居住证签注", "crowd.non_local", {"renews_license": "residence_permit"}),
    ("社会保障卡申领", None, {}),
    ("职工退休审批", "life_event.retirement", {}),
    ("基本养老金申领", "life_event.retirement", {}),
    ("老年综合津贴申领", "crowd.elderly", {"min_age": 65}),
    ("敬老卡申领", "crowd.elderly", {"min_age": 60}),
    ("最低生活保障申请", "crowd.hardship", {}),
    ("残疾人证办理", "crowd.disabled", {}),
    ("求职登记", "life_event.job_seeking", {}),
    ("失业登记", "life_event.job_seeking", {}),
    ("灵活就业社会保险费补贴", "life_event.job_seeking", {}),
    ("离校未就业高校毕业生登记", "life_event.graduation", {}),
    ("保安员证核发", "occupation.security_guard", {}),
    ("教师资格认定", "occupation.teacher", {}),
    ("医师执业注册", "occupation.medical_worker", {}),
    ("护士执业注册", "occupation.medical_worker", {}),
    ("网络预约出租汽车驾驶员证核发", "occupation.driver", {}),
    ("个体工商户设立登记", "occupation.self_employed", {}),
    ("中小学生和婴幼儿居民医保参保", "occupation.student", {}),
    ("中小学学籍转出转入", "occupation.student", {}),
    ("国家助学金申请", "occupation.student", {}),
    ("职工死亡丧葬补助金和抚恤金申领", "life_event.bereavement", {}),
    ("遗属待遇申领", "life_event.bereavement", {}),
    ("托育机构托位申请", "crowd.parent_young_child", {}),
    ("少儿住院互助基金参保", "crowd.parent_young_child", {}),
    ("有限责任公司设立登记", "enterprise.new_business", {"audience": "enterprise"}),
    ("有限责任公司变更登记", None, {"audience": "enterprise"}),
    ("有限责任公司注销登记", None, {"audience": "enterprise"}),
    ("企业年度报告公示", "enterprise.annual_report_due", {}),
    ("食品经营许可证新办", "enterprise.food_catering", {}),
    ("食品经营许可证延续", "enterprise.industry_H", {"renews_license": "food_business_licence"}),
    ("烟草专卖零售许可证新办", None, {"audience": "enterprise"}),
    ("酒类商品零售许可证核发", None, {"audience": "enterprise"}),
    ("高新技术企业认定", "enterprise.high_tech_candidate", {"industries": "I|M"}),
    ("技术先进型服务企业认定", "enterprise.high_tech_candidate", {}),
    ("新办纳税人涉税事项套餐", "enterprise.new_business", {}),
    ("增值税电子发票领用", "enterprise.new_business", {}),
    ("单位社会保险参保登记", "enterprise.new_business", {}),
    ("公章刻制备案", "enterprise.new_business", {}),
]


@pytest.mark.parametrize(("fragment", "code", "checks"), REQUIRED_ITEMS, ids=[r[0] for r in REQUIRED_ITEMS])
def test_required_item_present_and_tagged(ref, fragment, code, checks):
    # At least one item whose name holds the fragment carries the tag and the expected values.
    items = ref.catalog.filter(pl.col("name").str.contains(fragment, literal=True))
    assert items.height >= 1, fragment
    if code is not None:
        tagged = catalog_tag_codes(items).filter(pl.col("code") == code)["item_id"]
        items = items.filter(pl.col("item_id").is_in(tagged))
    for col, expected in checks.items():
        items = items.filter(pl.col(col) == expected)
    assert items.height >= 1, (fragment, code, checks)


def test_children_items_are_for_minors(ref):
    # crowd.child means under 14; a few child items (school-age insurance) run to 18 with the student years.
    child = ref.catalog.filter(pl.col("crowds").str.contains("crowd.child", literal=True))
    assert (child["max_age"].drop_nulls() <= 18).all()
    assert child.filter(pl.col("max_age") <= 13).height >= 10


def test_generator_reproduces_the_committed_files(tmp_path):
    """data/catalog.csv and license_types.csv are exactly what data/build/build_catalog.py writes from its spec."""
    spec = importlib.util.spec_from_file_location("build_catalog", DATA / "build" / "build_catalog.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.OUT, module.LICENSE_OUT = tmp_path / "catalog.csv", tmp_path / "license_types.csv"
    assert module.main() == 0
    assert (tmp_path / "catalog.csv").read_bytes() == (DATA / "catalog.csv").read_bytes()
    assert (tmp_path / "license_types.csv").read_bytes() == (DATA / "license_types.csv").read_bytes()


# -- malformed files -------------------------------------------------------------------------------------------


@pytest.fixture
def data_copy(tmp_path):
    for name in ("catalog.csv", "license_types.csv", "tag_taxonomy.csv", "item_conditions.csv"):
        shutil.copy(DATA / name, tmp_path / name)
    return tmp_path


def _edit_line(path: Path, lineno: int, old: str, new: str) -> None:
    lines = path.read_text(encoding="utf-8").split("\n")
    assert old in lines[lineno - 1]
    lines[lineno - 1] = lines[lineno - 1].replace(old, new, 1)
    path.write_text("\n".join(lines), encoding="utf-8")


def test_missing_column_is_named(data_copy):
    path = data_copy / "license_types.csv"
    text = path.read_text(encoding="utf-8").replace(",validity_years", ",validity", 1)
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ContractError, match=r"license_types\.csv, line 1: missing column\(s\) validity_years"):
        load_license_types(data_copy)


def test_bad_boolean_names_line_and_column(data_copy):
    _edit_line(data_copy / "tag_taxonomy.csv", 13, ",1,", ",yes,")
    with pytest.raises(ContractError, match=r"tag_taxonomy\.csv, line 13: column 'sensitive': expected 0 or 1"):
        load_taxonomy(data_copy)


def test_bad_integer_and_age_order(data_copy):
    path = data_copy / "catalog.csv"
    _edit_line(path, 5, "户籍证件,,,,,0,,,0", "户籍证件,,,,,0,12,x,0")
    with pytest.raises(ContractError, match=r"catalog\.csv, line 5: column 'max_age': expected a whole number"):
        load_catalog(data_copy)
    _edit_line(path, 5, "0,12,x,0", "0,12,3,0")
    with pytest.raises(ContractError, match=r"line 5: column 'max_age': max_age is below min_age"):
        load_catalog(data_copy)


def test_duplicate_key_names_the_later_line(data_copy):
    path = data_copy / "catalog.csv"
    lines = path.read_text(encoding="utf-8").split("\n")
    lines.insert(10, lines[2])
    path.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(ContractError, match=r"line 11: column 'item_id': duplicate key"):
        load_catalog(data_copy)


def test_bad_enum_and_tag_format(data_copy):
    path = data_copy / "catalog.csv"
    _edit_line(path, 3, ",person,", ",citizen,")
    with pytest.raises(ContractError, match=r"line 3: column 'audience': expected one of person, enterprise"):
        load_catalog(data_copy)
    _edit_line(path, 3, ",citizen,户籍证件,,", ",person,户籍证件,marriage,")
    with pytest.raises(ContractError, match=r"line 3: column 'life_events': expected tag codes"):
        load_catalog(data_copy)


def test_unknown_codes_across_files(data_copy):
    path = data_copy / "catalog.csv"
    _edit_line(path, 3, ",person,户籍证件,,", ",person,户籍证件,life_event.moving_house,")
    load_catalog(data_copy)  # well-formed on its own
    with pytest.raises(ContractError, match=r"life_event\.moving_house"):
        load_reference(data_copy)


def test_ragged_row_not_utf8_and_empty(data_copy):
    path = data_copy / "license_types.csv"
    _edit_line(path, 4, ",1,", ",1,extra,")
    with pytest.raises(ContractError, match=r"license_types\.csv, line 4: 7 fields where the header has 6"):
        load_license_types(data_copy)
    path.write_bytes("license_type,name_zh\npassport,普通护照\n".encode("gbk"))
    with pytest.raises(ContractError, match=r"line 2: not UTF-8"):
        load_license_types(data_copy)
    path.write_bytes(b"")
    with pytest.raises(ContractError, match=r"the file is empty"):
        load_license_types(data_copy)
    path.unlink()
    with pytest.raises(ContractError, match=r"license_types\.csv: cannot read the file"):
        load_license_types(data_copy)

"""Build data/catalog.csv (from data/build/catalog_spec.txt) and data/license_types.csv (from LICENSE_TYPES below).

Run by hand after editing the spec (never at runtime):  .venv/bin/python data/build/build_catalog.py
The output is deterministic: same spec, same bytes. Item ids depend only on a line's position inside its
department section, so append new items at the END of a section to keep published ids stable.

Spec format (one item per line, '#' starts a comment):
    @ <DEPT_CODE> <department name>            city-run section: items get ids SH-<DEPT>-0001, 0002, ...
    @district <DEPT_CODE> <department name>    district-run section: each line becomes 16 items, one per district,
                                               ids SH<district admin code>-<DEPT>-05NN (same NN = same service),
                                               department "<区名><bureau>" (DISTRICT_BUREAU or the name without 市), name "<区名> <item name>"
    <P|E> <name> | <category> | <tokens>
tokens: le=a,b (life_event.*), cr=a,b (crowd.*), oc=a,b (occupation.*), en=a,b (enterprise.* target groups, written
to the crowds column), in=H,I (GB/T 4754 sections), once, hukou, min=N, max=N, renew=<license_type>.
A name may hold one {a,b,c} group: one item per alternative (e.g. 食品经营许可证{变更,注销}).
"""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SPEC = HERE / "catalog_spec.txt"
OUT = HERE.parent / "catalog.csv"
LICENSE_OUT = HERE.parent / "license_types.csv"

COLUMNS = [
    "item_id", "name", "department", "audience", "category", "life_events", "crowds", "occupations",
    "industries", "once_per_subject", "min_age", "max_age", "local_hukou_only", "renews_license",
]

# Administrative division codes (GB/T 2260) of Shanghai's 16 districts; they make district item ids readable
# and stable even if a district's Chinese name changes (as 闸北 merged into 静安 in 2015).
DISTRICTS = [
    ("310101", "黄浦区"), ("310104", "徐汇区"), ("310105", "长宁区"), ("310106", "静安区"),
    ("310107", "普陀区"), ("310109", "虹口区"), ("310110", "杨浦区"), ("310112", "闵行区"),
    ("310113", "宝山区"), ("310114", "嘉定区"), ("310115", "浦东新区"), ("310116", "金山区"),
    ("310117", "松江区"), ("310118", "青浦区"), ("310120", "奉贤区"), ("310151", "崇明区"),
]

DISTRICT_FIRST_NUMBER = 501
# A district bureau is usually named like its city counterpart (市民政局 -> 静安区民政局); these are the exceptions.
DISTRICT_BUREAU = {"市教委": "教育局"}

# E-licence types: code, zh name, en name, holder, typical validity in years (None = no expiry).
# Validity is the common case used to synthesise expiry dates: an ID card is valid 5/10/20 years or for life
# depending on age at issue (20 is the adult 26-45 case); an HK/Macau permit is 10 years for adults, 5 for minors;
# a first driving licence is 6 years, then 10, then long-term. renewal_item_id is derived: the first city-level item
# whose renews_license names the type, or empty when only district-run items renew it (the consumer then picks the
# subject's district variant through renews_license).
LICENSE_TYPES = [
    ("resident_id_card", "居民身份证", "Resident identity card", "person", 20),
    ("household_register", "居民户口簿", "Household register", "person", None),
    ("residence_permit", "上海市居住证", "Shanghai residence permit", "person", 1),
    ("hk_macau_permit", "往来港澳通行证", "Exit-entry permit for travelling to and from Hong Kong and Macao", "person", 10),
    ("taiwan_permit", "往来台湾通行证", "Travel permit to and from Taiwan", "person", 10),
    ("passport", "普通护照", "Ordinary passport", "person", 10),
    ("driving_licence", "机动车驾驶证", "Motor vehicle driving licence", "person", 6),
    ("vehicle_licence", "机动车行驶证", "Motor vehicle licence", "person", None),
    ("marriage_certificate", "结婚证", "Marriage certificate", "person", None),
    ("birth_medical_certificate", "出生医学证明", "Birth medical certificate", "person", None),
    ("social_security_card", "社会保障卡", "Social security card", "person", 10),
    ("senior_card", "敬老卡", "Senior citizen card", "person", None),
    ("disability_certificate", "残疾人证", "Disability certificate", "person", 10),
    ("property_certificate", "不动产权证书", "Real estate title certificate", "person", None),
    ("teacher_qualification", "教师资格证书", "Teacher qualification certificate", "person", None),
    ("security_guard_certificate", "保安员证", "Security guard certificate", "person", None),
    ("physician_licence", "医师执业证书", "Physician practising certificate", "person", None),
    ("nurse_licence", "护士执业证书", "Nurse practising certificate", "person", 5),
    ("ride_hailing_driver_permit", "网络预约出租汽车驾驶员证", "Online ride-hailing driver permit", "person", 6),
    ("road_transport_qualification", "道路运输从业人员从业资格证", "Road transport worker qualification", "person", 6),
    ("foreigner_work_permit", "外国人工作许可证", "Foreigner's work permit", "person", 1),
    ("business_licence", "营业执照", "Business licence", "enterprise", None),
    ("food_business_licence", "食品经营许可证", "Food business licence", "enterprise", 5),
    ("food_production_licence", "食品生产许可证", "Food production licence", "enterprise", 5),
    ("tobacco_retail_licence", "烟草专卖零售许可证", "Tobacco monopoly retail licence", "enterprise", 5),
    ("liquor_retail_licence", "酒类商品零售许可证", "Liquor retail licence", "enterprise", 3),
    ("oil_retail_licence", "成品油零售经营批准证书", "Refined oil retail approval certificate", "enterprise", 5),
    ("high_tech_certificate", "高新技术企业证书", "High and new technology enterprise certificate", "enterprise", 3),
    ("advanced_tech_service_certificate", "技术先进型服务企业证书", "Advanced technology service enterprise certificate", "enterprise", 3),
    ("medical_institution_licence", "医疗机构执业许可证", "Medical institution practising licence", "enterprise", 5),
    ("public_hygiene_licence", "公共场所卫生许可证", "Public place hygiene licence", "enterprise", 4),
    ("private_school_licence", "民办学校办学许可证", "Private school operating licence", "enterprise", 5),
    ("road_transport_licence", "道路运输经营许可证", "Road transport operating licence", "enterprise", 4),
    ("drug_business_licence", "药品经营许可证", "Drug business licence", "enterprise", 5),
    ("pollutant_discharge_permit", "排污许可证", "Pollutant discharge permit", "enterprise", 5),
    ("hazchem_business_licence", "危险化学品经营许可证", "Hazardous chemicals business licence", "enterprise", 3),
    ("safety_production_licence", "安全生产许可证", "Work safety licence", "enterprise", 3),
    ("construction_qualification", "建筑业企业资质证书", "Construction enterprise qualification certificate", "enterprise", 5),
    ("telecom_value_added_licence", "增值电信业务经营许可证", "Value-added telecom business licence", "enterprise", 5),
]
LICENSE_COLUMNS = ["license_type", "name_zh", "name_en", "holder", "validity_years", "renewal_item_id"]
INDUSTRIES = set("ABCDEFGHIJKLMNOPQRST")
BRACE = re.compile(r"\{([^{}]*)\}")


class SpecError(Exception):
    pass


def expand(name: str) -> list[str]:
    m = BRACE.search(name)
    if not m:
        return [name]
    return [name[: m.start()] + alt + name[m.end():] for alt in m.group(1).split(",")]


def parse_tokens(tokens: str, lineno: int) -> dict[str, str]:
    row = {"life_events": "", "crowds": "", "occupations": "", "industries": "", "once_per_subject": "0",
           "min_age": "", "max_age": "", "local_hukou_only": "0", "renews_license": ""}
    prefixes = {"le": ("life_events", "life_event."), "cr": ("crowds", "crowd."),
                "oc": ("occupations", "occupation."), "en": ("crowds", "enterprise.")}
    for tok in tokens.split():
        key, _, val = tok.partition("=")
        if key in prefixes:
            col, prefix = prefixes[key]
            codes = [prefix + v for v in val.split(",") if v]
            row[col] = "|".join([c for c in row[col].split("|") if c] + codes)
        elif key == "in":
            letters = val.split(",")
            if not set(letters) <= INDUSTRIES:
                raise SpecError(f"line {lineno}: bad industry letters {val!r}")
            row["industries"] = "|".join(letters)
        elif key == "once":
            row["once_per_subject"] = "1"
        elif key == "hukou":
            row["local_hukou_only"] = "1"
        elif key in ("min", "max"):
            row[f"{key}_age"] = str(int(val))
        elif key == "renew":
            row["renews_license"] = val
        else:
            raise SpecError(f"line {lineno}: unknown token {tok!r}")
    return row


def build(spec_text: str) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    section: tuple[bool, str, str] | None = None
    counters: dict[tuple[bool, str], int] = {}
    for lineno, raw in enumerate(spec_text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("@"):
            head = line.split()
            district_run = head[0] == "@district"
            if head[0] not in ("@", "@district") or len(head) != 3:
                raise SpecError(f"line {lineno}: bad section header {raw!r}")
            section = (district_run, head[1], head[2])
            continue
        if section is None:
            raise SpecError(f"line {lineno}: item before any section")
        district_run, code, dept = section
        parts = [p.strip() for p in line.split("|")]
        if len(parts) != 3 or parts[0][:2] not in ("P ", "E "):
            raise SpecError(f"line {lineno}: expected '<P|E> name | category | tokens': {raw!r}")
        audience = "person" if parts[0][0] == "P" else "enterprise"
        attrs = parse_tokens(parts[2], lineno)
        for name in expand(parts[0][2:].strip()):
            key = (district_run, code)
            n = counters.get(key, DISTRICT_FIRST_NUMBER if district_run else 1)
            counters[key] = n + 1
            base = {"name": name, "audience": audience, "category": parts[1], **attrs}
            if not district_run:
                rows.append({"item_id": f"SH-{code}-{n:04d}", "department": dept, **base})
                continue
            for admin, district in DISTRICTS:
                rows.append({**base, "item_id": f"SH{admin}-{code}-{n:04d}",
                             "department": district + DISTRICT_BUREAU.get(dept, dept.removeprefix("市")),
                             "name": f"{district} {name}"})
    ids = [r["item_id"] for r in rows]
    if len(ids) != len(set(ids)):
        raise SpecError("duplicate item ids (two sections share a department code?)")
    return rows


def license_rows(items: list[dict[str, str]]) -> list[dict[str, str]]:
    codes = [lt[0] for lt in LICENSE_TYPES]
    unknown = sorted({r["renews_license"] for r in items if r["renews_license"]} - set(codes))
    if unknown:
        raise SpecError(f"renews_license names unknown licence types: {unknown}")
    out = []
    for code, zh, en, holder, years in LICENSE_TYPES:
        city = [r["item_id"] for r in items if r["renews_license"] == code and r["item_id"].startswith("SH-")]
        out.append({"license_type": code, "name_zh": zh, "name_en": en, "holder": holder,
                    "validity_years": "" if years is None else str(years),
                    "renewal_item_id": city[0] if city else ""})
    return out


def main() -> int:
    rows = build(SPEC.read_text(encoding="utf-8"))
    with LICENSE_OUT.open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=LICENSE_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(license_rows(rows))
    with OUT.open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {len(rows)} items to {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Reference data: the districts, and loaders for the files shipped under ``data/`` (service catalogue, licence
types, tag taxonomy, item conditions). Nothing else reads these files.

Each loader returns a typed ``pl.DataFrame`` (booleans as Boolean, ages and validities as Int64, empty cells as
null) and raises :class:`data.errors.ContractError` naming the file, line (header = line 1) and column of the
first problem, so an operator who edits a file by hand learns exactly what to fix. ``load_reference`` also checks
the files against each other (tag codes, licence types and renewal items that must exist elsewhere).

The files are small (a few thousand rows), so they are parsed with the ``csv`` module, which knows the physical line
of every record even when a quoted field spans lines; all checks on the parsed columns are Polars expressions.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from data.errors import ContractError
from data.registry import SNAPSHOT_SCHEMAS

# Shanghai's sixteen districts (zh as the registries and the catalogue's departments write them -> en).
DISTRICT_NAMES_EN: dict[str, str] = {
    "黄浦区": "Huangpu", "徐汇区": "Xuhui", "长宁区": "Changning", "静安区": "Jing'an", "普陀区": "Putuo",
    "虹口区": "Hongkou", "杨浦区": "Yangpu", "闵行区": "Minhang", "宝山区": "Baoshan", "嘉定区": "Jiading",
    "浦东新区": "Pudong New Area", "金山区": "Jinshan", "松江区": "Songjiang", "青浦区": "Qingpu",
    "奉贤区": "Fengxian", "崇明区": "Chongming",
}
DISTRICTS: tuple[str, ...] = tuple(DISTRICT_NAMES_EN)

CATALOG_FILE = "catalog.csv"
LICENSE_TYPES_FILE = "license_types.csv"
TAXONOMY_FILE = "tag_taxonomy.csv"
ITEM_CONDITIONS_FILE = "item_conditions.csv"
ITEM_NAMES_EN_FILE = "item_names_en.csv"  # item_id, name_zh, name_en: the catalogue's names are Chinese only

# The catalogue file has exactly the columns of the registry snapshot, so ingest and batch jobs share one shape.
CATALOG_SCHEMA: dict[str, pl.DataType] = dict(SNAPSHOT_SCHEMAS["catalog"])
LICENSE_TYPES_SCHEMA: dict[str, pl.DataType] = {
    "license_type": pl.String(),
    "name_zh": pl.String(),
    "name_en": pl.String(),
    "holder": pl.String(),
    "validity_years": pl.Int64(),
    "renewal_item_id": pl.String(),
}
TAXONOMY_SCHEMA: dict[str, pl.DataType] = {
    "code": pl.String(),
    "dimension": pl.String(),
    "name_zh": pl.String(),
    "name_en": pl.String(),
    "subject_type": pl.String(),
    "default_validity_days": pl.Int64(),
    "sensitive": pl.Boolean(),
    "description": pl.String(),
    # How a feed reason names the tag ("因为您近期登记结婚"); empty for sensitive tags, which reasons never name.
    "reason_zh": pl.String(),
    "reason_en": pl.String(),
}

# Eligibility the catalogue (and the city's export of it) does not carry, one row per item it applies to: ages
# tighten the catalogue's own bounds; min_enterprise_age_years needs the enterprise's founded_on; own_interest_only
# items are offered only to a subject whose own recent events touched that very item. ``basis`` says why (the rule
# or the missing registry fact), so every condition is documented where it is kept.
ITEM_CONDITIONS_SCHEMA: dict[str, pl.DataType] = {
    "item_id": pl.String(),
    "name": pl.String(),
    "min_age": pl.Int64(),
    "max_age": pl.Int64(),
    "min_enterprise_age_years": pl.Int64(),
    "own_interest_only": pl.Boolean(),
    "basis": pl.String(),
}

SUBJECT_TYPES = ("person", "enterprise")
DIMENSIONS = ("life_event", "crowd", "occupation", "enterprise")
INDUSTRY_SECTIONS = tuple("ABCDEFGHIJKLMNOPQRST")  # GB/T 4754-2017 sections
TAG_COLUMNS = ("life_events", "crowds", "occupations")

_TAG_CODE = r"^(life_event|crowd|occupation|enterprise)\.[A-Za-z0-9_]+$"
_LINE = "_line"


@dataclass(frozen=True)
class _Rules:
    key: str
    required: tuple[str, ...]
    enums: dict[str, tuple[str, ...]]


_CATALOG_RULES = _Rules(
    key="item_id",
    required=("item_id", "name", "department", "audience", "category"),
    enums={"audience": SUBJECT_TYPES},
)
_LICENSE_RULES = _Rules(
    key="license_type",
    required=("license_type", "name_zh", "name_en", "holder"),
    enums={"holder": SUBJECT_TYPES},
)
_ITEM_CONDITIONS_RULES = _Rules(key="item_id", required=("item_id", "name", "basis"), enums={})
_TAXONOMY_RULES = _Rules(
    key="code",
    required=("code", "dimension", "name_zh", "name_en", "subject_type", "sensitive"),
    enums={"dimension": DIMENSIONS, "subject_type": SUBJECT_TYPES},
)


def load_catalog(data_dir: Path | str) -> pl.DataFrame:
    """The service catalogue (``data/catalog.csv``), typed like the ``catalog`` registry snapshot."""
    path = Path(data_dir) / CATALOG_FILE
    raw = _read_csv(path, CATALOG_SCHEMA)
    _check_common(path, raw, _CATALOG_RULES)
    for col in TAG_COLUMNS:
        _fail_first(path, raw, col, _bad_list(col, pl.element().str.contains(_TAG_CODE)),
                    "expected tag codes such as life_event.marriage separated by |")
    _fail_first(path, raw, "industries",
                _bad_list("industries", pl.element().is_in(INDUSTRY_SECTIONS)),
                "expected GB/T 4754 section letters A-T separated by |")
    df = _typed(path, raw, CATALOG_SCHEMA)
    _fail_first(path, df, "max_age", pl.col("min_age") > pl.col("max_age"), "max_age is below min_age")
    _fail_first(path, df, "min_age", pl.col("min_age") < 0, "an age cannot be negative")
    return df.drop(_LINE)


def load_license_types(data_dir: Path | str) -> pl.DataFrame:
    """The e-licence types (``data/license_types.csv``); ``validity_years`` null means the licence never expires."""
    path = Path(data_dir) / LICENSE_TYPES_FILE
    raw = _read_csv(path, LICENSE_TYPES_SCHEMA)
    _check_common(path, raw, _LICENSE_RULES)
    df = _typed(path, raw, LICENSE_TYPES_SCHEMA)
    _fail_first(path, df, "validity_years", pl.col("validity_years") <= 0, "validity must be positive or empty")
    return df.drop(_LINE)


def load_taxonomy(data_dir: Path | str) -> pl.DataFrame:
    """The tag taxonomy (``data/tag_taxonomy.csv``); ``default_validity_days`` null means open-ended, ``reason_zh`` /
    ``reason_en`` are the feed-reason phrases (null for sensitive tags)."""
    path = Path(data_dir) / TAXONOMY_FILE
    raw = _read_csv(path, TAXONOMY_SCHEMA)
    _check_common(path, raw, _TAXONOMY_RULES)
    _fail_first(path, raw, "code", ~pl.col("code").str.starts_with(pl.col("dimension") + "."),
                "a code must start with its dimension and a dot (e.g. crowd.elderly)")
    df = _typed(path, raw, TAXONOMY_SCHEMA)
    _fail_first(path, df, "default_validity_days", pl.col("default_validity_days") <= 0,
                "validity must be positive or empty")
    for col in ("reason_zh", "reason_en"):
        _fail_first(path, df, col, pl.col("sensitive") & pl.col(col).is_not_null(),
                    "a sensitive tag never gives a reason: leave it empty")
    return df.drop(_LINE)


def load_item_conditions(data_dir: Path | str, catalog: pl.DataFrame | None = None) -> pl.DataFrame:
    """The eligibility conditions the catalogue lacks (``data/item_conditions.csv``), typed; with ``catalog``, every
    row must name an item of it by its catalogue name (a condition on a renamed or removed item is an error, not a
    silent no-op)."""
    path = Path(data_dir) / ITEM_CONDITIONS_FILE
    raw = _read_csv(path, ITEM_CONDITIONS_SCHEMA)
    _check_common(path, raw, _ITEM_CONDITIONS_RULES)
    df = _typed(path, raw, ITEM_CONDITIONS_SCHEMA)
    for col in ("min_age", "max_age", "min_enterprise_age_years"):
        _fail_first(path, df, col, pl.col(col) < 0, "cannot be negative")
    _fail_first(path, df, "max_age", pl.col("min_age") > pl.col("max_age"), "max_age is below min_age")
    _fail_first(path, df, "item_id",
                pl.all_horizontal(pl.col(c).is_null() for c in ("min_age", "max_age", "min_enterprise_age_years"))
                & ~pl.col("own_interest_only"), "the row sets no condition")
    if catalog is not None:
        known = df.join(catalog.select("item_id", catalog_name="name"), on="item_id", how="left")
        _fail_first(path, known, "item_id", pl.col("catalog_name").is_null(), f"not in {CATALOG_FILE}")
        bad = known.filter(pl.col("catalog_name").is_not_null() & (pl.col("name") != pl.col("catalog_name"))).head(1)
        if bad.height:
            line, name, catalog_name = bad.select(_LINE, "name", "catalog_name").row(0)
            raise ContractError(f"{path}, line {line}: column 'name': name {name!r} is not the catalogue's name "
                                f"{catalog_name!r} (check the item_id)")
    return df.drop(_LINE)


@dataclass(frozen=True)
class Reference:
    """The reference tables, checked against each other."""

    catalog: pl.DataFrame
    license_types: pl.DataFrame
    taxonomy: pl.DataFrame
    item_conditions: pl.DataFrame


def read_reference_table(data_dir: Path | str, file_name: str) -> pl.DataFrame | None:
    """A reference file as it is, every column text (empty cells null), or None if the file is absent.

    For readers that treat each file as optional and take only a few columns (the alert engine's names, the
    reminder rules' checks); the typed, checked loaders above are for everything else.
    """
    path = Path(data_dir) / file_name
    if not path.exists():
        return None
    return pl.read_csv(path, infer_schema=False)


def load_reference(data_dir: Path | str) -> Reference:
    """Load all the files and check that every code or item one file names exists in the file that defines it."""
    data_dir = Path(data_dir)
    catalog = load_catalog(data_dir)
    ref = Reference(catalog, load_license_types(data_dir), load_taxonomy(data_dir),
                    load_item_conditions(data_dir, catalog))
    problems = reference_problems(ref)
    if problems:
        raise ContractError(f"{data_dir}: reference files disagree: " + "; ".join(problems[:5]))
    return ref


def catalog_tag_codes(catalog: pl.DataFrame) -> pl.DataFrame:
    """One row per (item_id, code) for every tag the catalogue names, industries as ``enterprise.industry_X``."""
    parts = [
        catalog.select("item_id", code=pl.col(col).str.split("|")).explode("code")
        for col in TAG_COLUMNS
    ]
    parts.append(
        catalog.select("item_id", code=pl.col("industries").str.split("|"))
        .explode("code")
        .with_columns(code=pl.lit("enterprise.industry_") + pl.col("code"))
    )
    return pl.concat(parts).drop_nulls("code").unique(maintain_order=True)


def reference_problems(ref: Reference) -> list[str]:
    """Cross-file inconsistencies, each as a short sentence naming the offending codes (empty list: all good)."""
    problems = []
    tags = catalog_tag_codes(ref.catalog)
    unknown = tags.join(ref.taxonomy.select("code"), on="code", how="anti")
    if unknown.height:
        codes = sorted(unknown["code"].unique().to_list())
        problems.append(f"{CATALOG_FILE} uses tag codes missing from {TAXONOMY_FILE}: {', '.join(codes[:10])}")
    renews = ref.catalog.drop_nulls("renews_license").join(
        ref.license_types.select(renews_license="license_type"), on="renews_license", how="anti"
    )
    if renews.height:
        codes = sorted(renews["renews_license"].unique().to_list())
        problems.append(f"{CATALOG_FILE} renews licence types missing from {LICENSE_TYPES_FILE}: {', '.join(codes)}")
    renewal = ref.license_types.drop_nulls("renewal_item_id").join(
        ref.catalog.select(renewal_item_id="item_id"), on="renewal_item_id", how="anti"
    )
    if renewal.height:
        ids = renewal["renewal_item_id"].to_list()
        problems.append(f"{LICENSE_TYPES_FILE} names renewal items missing from {CATALOG_FILE}: {', '.join(ids)}")
    return problems


# -- parsing and checks ----------------------------------------------------------------------------------------


def _read_csv(path: Path, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """All columns of ``schema`` as nullable strings plus the physical line of each record."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ContractError(f"{path}: cannot read the file ({exc.strerror or exc})") from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ContractError(
            f"{path}, line {line}: not UTF-8 (byte {data[exc.start]:#04x}); save the file as UTF-8"
        ) from exc
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise ContractError(f"{path}, line {line}: contains a NUL byte")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise ContractError(f"{path}: the file is empty; expected a header row")
        header = [h.strip() for h in header]
        dupes = sorted({h for h in header if header.count(h) > 1})
        if dupes:
            raise ContractError(f"{path}, line 1: column {dupes[0]!r} appears twice in the header")
        missing = [c for c in schema if c not in header]
        if missing:
            raise ContractError(f"{path}, line 1: missing column(s) {', '.join(missing)}")
        index = [header.index(c) for c in schema]
        columns: dict[str, list[str | None]] = {c: [] for c in schema}
        lines: list[int] = []
        start = reader.line_num + 1
        for record in reader:
            if record and len(record) != len(header):
                raise ContractError(
                    f"{path}, line {start}: {len(record)} fields where the header has {len(header)}"
                )
            if record and any(cell.strip() for cell in record):
                lines.append(start)
                for c, i in zip(schema, index):
                    cell = record[i].strip()
                    columns[c].append(cell or None)
            start = reader.line_num + 1
    except csv.Error as exc:
        raise ContractError(f"{path}, line {reader.line_num}: unreadable CSV ({exc})") from exc
    return pl.DataFrame({**columns, _LINE: lines}, schema={**dict.fromkeys(schema, pl.String()), _LINE: pl.Int64()})


def _check_common(path: Path, raw: pl.DataFrame, rules: _Rules) -> None:
    for col in rules.required:
        _fail_first(path, raw, col, pl.col(col).is_null(), "a value is required")
    for col, allowed in rules.enums.items():
        _fail_first(path, raw, col, ~pl.col(col).is_in(allowed), f"expected one of {', '.join(allowed)}")
    _fail_first(path, raw, rules.key, ~pl.col(rules.key).is_first_distinct(),
                "duplicate key (it appeared on an earlier line)")


def _typed(path: Path, raw: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    for col, dtype in schema.items():
        if dtype == pl.Boolean():
            _fail_first(path, raw, col, ~pl.col(col).is_in(["0", "1"]), "expected 0 or 1")
        elif dtype == pl.Int64():
            _fail_first(path, raw, col, ~pl.col(col).str.contains(r"^-?[0-9]{1,9}$"), "expected a whole number")
    exprs = []
    for col, dtype in schema.items():
        if dtype == pl.Boolean():
            # An empty flag means "no": the catalogue contract makes the flags optional with default 0.
            exprs.append((pl.col(col) == "1").fill_null(False).alias(col))
        else:
            exprs.append(pl.col(col).cast(dtype))
    return raw.select(*exprs, _LINE)


def _bad_list(col: str, element_ok: pl.Expr) -> pl.Expr:
    """True where a |-separated cell holds an element failing ``element_ok`` (an expression over pl.element())."""
    return pl.col(col).is_not_null() & ~pl.col(col).str.split("|").list.eval(element_ok).list.all()


def _fail_first(path: Path, df: pl.DataFrame, col: str, bad: pl.Expr, why: str) -> None:
    """Raise for the first row where ``bad`` holds (nulls count as fine: required-ness is checked separately)."""
    hits = df.filter(bad.fill_null(False)).select(_LINE, pl.col(col).cast(pl.String)).head(1)
    if hits.height:
        line, value = hits.row(0)
        raise ContractError(f"{path}, line {line}: column {col!r}: {why} (got {value!r})")

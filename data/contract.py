"""The data contract: what an export's tables look like and the row rules ingest enforces.

Every rule is a Polars expression over a frame whose contract columns are still strings, so a batch of
millions of rows is validated without touching Python per row. :func:`validate` gives each row the
*first* rule it breaks (``_field``, ``_reason``), in the order the rules are listed here, which is also
the order documented in docs/data-contract.md.

Checksums: resident ID numbers follow GB 11643-1999 (ISO 7064 MOD 11-2), unified social credit codes
follow GB 32100-2015 (MOD 31 over a 31-character alphabet). Scalar versions exist for tests and for
single values (the HTTP API); the Polars versions are what ingest uses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import polars as pl

from data.eventlog import ACTIONS, CHANNELS
from data.facts import end_of_as_of_day_utc
from data.reference import DISTRICTS  # the one list of districts; ingest checks against it

INDUSTRIES = tuple("ABCDEFGHIJKLMNOPQRST")  # GB/T 4754-2017 sections
GENDERS = ("M", "F")
AUDIENCES = ("person", "enterprise")
TRUE_WORDS = ("1", "true", "t", "yes", "y")
FALSE_WORDS = ("0", "false", "f", "no", "n")
# Before this a birth or founding date is a data-entry error, not history.
EARLIEST_DATE = date(1880, 1, 1)
# Before this an event time is a broken clock or a placeholder (0001-01-01), not an interaction.
EARLIEST_TS = datetime(1900, 1, 1, tzinfo=ZoneInfo("UTC"))
# The shapes the contract promises. The parsers underneath are lenient (chrono takes `2026-2-3`,
# ` 2026-02-03`, `+2026-02-03`; `str.to_integer` takes `+7`), so the shape is checked as well.
DATE_SHAPE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
INTEGER_SHAPE = r"^-?[0-9]+$"
TS_SHAPE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})?$"
NAIVE_TS_BYTES = len("YYYY-MM-DD HH:MM:SS")

# --- GB 11643 resident ID: 6-digit address code, 8-digit birth date, 3-digit sequence, check char ----
ID_WEIGHTS = tuple(pow(2, 17 - i, 11) for i in range(17))  # 7 9 10 5 8 4 2 1 6 3 7 9 10 5 8 4 2
ID_CHECK_CHARS = "10X98765432"  # indexed by (weighted sum mod 11)

# --- GB 32100 USCC: 31-char alphabet (no I O Z S V), weights 3^i mod 31, check = (31 - sum mod 31) mod 31 --
USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
USCC_WEIGHTS = tuple(pow(3, i, 31) for i in range(17))  # 1 3 9 27 19 26 16 17 20 29 25 13 8 24 10 30 28
_USCC_VALUE = {c: i for i, c in enumerate(USCC_ALPHABET)}


def resident_id_check_char(first17: str) -> str:
    """The GB 11643 check character for the first 17 digits of a resident ID number."""
    if len(first17) != 17 or not first17.isdigit() or not first17.isascii():
        raise ValueError("expected 17 ASCII digits")
    total = sum(int(ch) * w for ch, w in zip(first17, ID_WEIGHTS))
    return ID_CHECK_CHARS[total % 11]


def is_valid_resident_id(value: str) -> bool:
    """True for an 18-character GB 11643 number with a real birth date and the right check character."""
    if len(value) != 18 or not value[:17].isascii() or not value[:17].isdigit():
        return False
    try:
        datetime.strptime(value[6:14], "%Y%m%d")
    except ValueError:
        return False
    return resident_id_check_char(value[:17]) == value[17].upper()


def uscc_check_char(first17: str) -> str:
    """The GB 32100 check character for the first 17 characters of a unified social credit code."""
    if len(first17) != 17 or any(ch not in _USCC_VALUE for ch in first17):
        raise ValueError(f"expected 17 characters from {USCC_ALPHABET}")
    total = sum(_USCC_VALUE[ch] * w for ch, w in zip(first17, USCC_WEIGHTS))
    return USCC_ALPHABET[(31 - total % 31) % 31]


def is_valid_uscc(value: str) -> bool:
    """True for an 18-character GB 32100 code over the USCC alphabet with the right check character."""
    if len(value) != 18 or any(ch not in _USCC_VALUE for ch in value):
        return False
    return uscc_check_char(value[:17]) == value[17]


def resident_id_problem(col: pl.Expr) -> pl.Expr:
    """Per row: null when the ID is absent or valid, else ``"bad_format"`` or ``"bad_checksum"``."""
    upper = col.str.to_uppercase()
    shape_ok = upper.str.contains(r"^[0-9]{17}[0-9X]$") & upper.str.slice(6, 8).str.to_date(
        "%Y%m%d", strict=False
    ).is_not_null()
    # The 17 digits as one integer (< 10^17 fits in Int64), each digit then taken arithmetically: 17
    # integer ops per row instead of 17 one-character strings (4x less CPU over a million ids). Only rows
    # of the right shape (17 ASCII digits) reach the checksum test below.
    body = upper.str.slice(0, 17).str.to_integer(base=10, strict=False)
    total = pl.sum_horizontal([((body // 10 ** (16 - i)) % 10) * w for i, w in enumerate(ID_WEIGHTS)])
    expected = (total % 11).replace_strict(
        {i: ch for i, ch in enumerate(ID_CHECK_CHARS)}, default=None, return_dtype=pl.String
    )
    return (
        pl.when(col.is_null())
        .then(None)
        .when(~shape_ok)
        .then(pl.lit("bad_format"))
        .when(expected != upper.str.slice(17, 1))
        .then(pl.lit("bad_checksum"))
        .otherwise(None)
    )


def uscc_problem(col: pl.Expr) -> pl.Expr:
    """Per row: null when the USCC is absent or valid, else ``"bad_format"`` or ``"bad_checksum"``."""
    shape_ok = col.str.contains(f"^[{USCC_ALPHABET}]{{18}}$")
    values = [
        col.str.slice(i, 1).replace_strict(_USCC_VALUE, default=None, return_dtype=pl.Int64)
        for i in range(17)
    ]
    total = pl.sum_horizontal([v * w for v, w in zip(values, USCC_WEIGHTS)])
    expected = ((31 - total % 31) % 31).replace_strict(
        dict(enumerate(USCC_ALPHABET)), default=None, return_dtype=pl.String
    )
    return (
        pl.when(col.is_null())
        .then(None)
        .when(~shape_ok)
        .then(pl.lit("bad_format"))
        .when(expected != col.str.slice(17, 1))
        .then(pl.lit("bad_checksum"))
        .otherwise(None)
    )


def mask_id_number(col: pl.Expr) -> pl.Expr:
    """Keep only the 6-digit address code of a resident ID (never the birth date or sequence)."""
    return (
        pl.when(col.is_null() | (col.str.len_chars() == 0))
        .then(col)
        .when(col.str.len_chars() >= 18)
        .then(col.str.slice(0, 6) + pl.lit("*" * 12))
        .otherwise(pl.lit("*" * 18))
    )


# --- Resident ID numbers outside their column ------------------------------------------------------
# A resident ID's shape: 6 address digits starting with a province digit (GB/T 2260 provinces are 11-82, so
# 1-8), a birth date YYYYMMDD (year 18xx-20xx, month 01-12, day 01-31), 3 sequence digits and a check
# character, not part of a longer run of digits. The check character is not tested (a mistyped number is
# still personal data); the date shape is what tells an ID from an order number or a hash that happens to
# hold 18 digits, and the province digit is what tells it from an enterprise's USCC (91..., 92..., 93...: a
# USCC whose region code ends in 18, 19 or 20, such as 青浦区 310118, would otherwise read as a birth year).
# Written for Rust's regex engine (Polars) and Python's alike, so without look-around: the neighbours are
# matched as groups 1 and 3.
_ID_BODY = r"([1-8][0-9]{5})(?:18|19|20)[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])[0-9]{3}[0-9Xx]"
RESIDENT_ID_IN_TEXT = r"(^|[^0-9])" + _ID_BODY + r"($|[^0-9])"
_ID_MASK = "*" * 12
_RESIDENT_ID_IN_TEXT_RE = re.compile(RESIDENT_ID_IN_TEXT)

# The one rule for subject ids (people, enterprises, events' subjects, licence holders), shared by
# ingest and the HTTP API's paths and bodies: an id either side accepts, the other serves.
SUBJECT_ID_MAX_LENGTH = 64
SUBJECT_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
SUBJECT_ID_RULE = (
    "1-64 characters from A-Z a-z 0-9 _ -, and not shaped like a resident ID number "
    "(17 digits and a check character, with a birth date inside)"
)
_SUBJECT_ID_RE = re.compile(SUBJECT_ID_PATTERN)


def contains_resident_id(col: pl.Expr) -> pl.Expr:
    """Per row: does the text hold something shaped like a resident ID number (any check character)?"""
    return col.str.contains(RESIDENT_ID_IN_TEXT)


def mask_resident_ids(col: pl.Expr) -> pl.Expr:
    """Every resident-ID-shaped number in the text cut to its 6-digit address code plus ``*``.

    Twice, because a match consumes the character after the number, which may be the one before the
    next number ("ID,ID"): the second pass finds those, and no third can be needed (two numbers the
    first pass skipped cannot be neighbours).
    """
    replacement = "${1}${2}" + _ID_MASK + "${3}"
    return col.str.replace_all(RESIDENT_ID_IN_TEXT, replacement).str.replace_all(RESIDENT_ID_IN_TEXT, replacement)


def mask_resident_ids_text(text: str) -> str:
    """:func:`mask_resident_ids` for one Python string (messages, single values)."""
    def sub(t: str) -> str:
        return _RESIDENT_ID_IN_TEXT_RE.sub(lambda m: m.group(1) + m.group(2) + _ID_MASK + m.group(3), t)

    return sub(sub(text))


def subject_id_problem(value: str) -> str | None:
    """``None`` for a subject id the contract accepts, else the quarantine reason (``bad_id`` or
    ``resident_id_shaped``). The scalar twin of the ingest rules, for the HTTP API."""
    if not _SUBJECT_ID_RE.fullmatch(value):
        return "bad_id"
    if _RESIDENT_ID_IN_TEXT_RE.search(value):
        return "resident_id_shaped"
    return None


def check_no_resident_id(value: str) -> str:
    """``value`` unless it holds something shaped like a resident ID number (a pydantic validator for any
    id the API stores or audits: item ids, tag codes)."""
    if _RESIDENT_ID_IN_TEXT_RE.search(value):
        raise ValueError("looks like a resident ID number: never use one as an id")
    return value


def check_subject_id(value: str) -> str:
    """``value`` when it follows the subject-id rule, else ``ValueError`` (a pydantic validator)."""
    problem = subject_id_problem(value)
    if problem == "resident_id_shaped":
        raise ValueError("looks like a resident ID number: never use one as an id")
    if problem is not None:
        raise ValueError(f"a subject id is {SUBJECT_ID_RULE}")
    return value


# ------------------------------------------------------------------------------------------------
# Table specs
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # id | subject_id | text | date | bool | int | enum | ts | resident_id | uscc
    required: bool
    values: tuple[str, ...] = ()
    doc: str = ""
    # Reason used when an enum value is not allowed (the brief names unknown_action / unknown_channel).
    enum_reason: str = "bad_value"


@dataclass(frozen=True)
class TableSpec:
    name: str
    key: str
    columns: tuple[Column, ...]
    doc: str = ""

    @property
    def required(self) -> list[str]:
        return [c.name for c in self.columns if c.required]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


CATALOG = TableSpec(
    "catalog",
    "item_id",
    (
        Column("item_id", "id", True, doc="unique item code"),
        Column("name", "text", True, doc="official item name (Chinese)"),
        Column("department", "text", True, doc="owning department"),
        Column("audience", "enum", True, AUDIENCES, doc="person or enterprise"),
        Column("category", "text", True),
        Column("life_events", "text", False, doc="life-event tag codes separated by |"),
        Column("crowds", "text", False, doc="crowd tag codes separated by |"),
        Column("occupations", "text", False, doc="occupation tag codes separated by |"),
        Column("industries", "text", False, doc="industry letters / enterprise tag codes separated by |"),
        Column("once_per_subject", "bool", False, doc="a subject does this item at most once (empty = 0)"),
        Column("min_age", "int", False),
        Column("max_age", "int", False),
        Column("local_hukou_only", "bool", False, doc="empty = 0"),
        Column("renews_license", "text", False, doc="license_type this item renews"),
    ),
    "the service catalogue",
)

PEOPLE = TableSpec(
    "people",
    "person_id",
    (
        Column("person_id", "subject_id", True),
        Column("birth_date", "date", True, doc="YYYY-MM-DD, not after as_of"),
        Column("gender", "enum", True, GENDERS),
        Column("district", "enum", True, DISTRICTS, doc="one of Shanghai's 16 districts"),
        Column("local_hukou", "bool", True),
        Column("id_number", "resident_id", False, doc="18-char resident ID; stored only as an HMAC"),
        Column("marital_status", "text", False),
        Column("household_id", "id", False),
        Column("occupation", "text", False, doc="bare occupation code, e.g. teacher"),
        Column("low_income", "bool", False),
        Column("disability", "bool", False),
    ),
    "the population registry",
)

ENTERPRISES = TableSpec(
    "enterprises",
    "enterprise_id",
    (
        Column("enterprise_id", "subject_id", True),
        Column("name", "text", True),
        Column("industry", "enum", True, INDUSTRIES, doc="GB/T 4754 section letter A-T"),
        Column("district", "enum", True, DISTRICTS),
        Column("founded_on", "date", True, doc="YYYY-MM-DD, not after as_of"),
        Column("employees", "int", True, doc="integer >= 0"),
        Column("uscc", "uscc", False, doc="GB 32100 unified social credit code"),
        Column("legal_rep_id", "subject_id", False, doc="person_id of the legal representative"),
    ),
    "the legal-person registry",
)

LICENSES = TableSpec(
    "licenses",
    "license_id",
    (
        Column("license_id", "id", True),
        Column("holder_id", "subject_id", True, doc="a person_id or enterprise_id already registered"),
        Column("license_type", "id", True, doc="a code of data/license_types.csv (when that file exists)"),
        Column("issued_on", "date", True, doc="YYYY-MM-DD, not after as_of"),
        Column("expires_on", "date", False, doc="YYYY-MM-DD, not before issued_on; empty = no expiry"),
    ),
    "e-licences held by people and enterprises",
)

EVENTS = TableSpec(
    "events",
    "event_id",
    (
        Column("subject_id", "subject_id", True),
        Column("item_id", "id", True, doc="an item of the catalogue"),
        Column("action", "enum", True, ACTIONS, enum_reason="unknown_action"),
        Column("ts", "ts", True, doc="ISO-8601; naive = Asia/Shanghai; not after as_of"),
        Column("event_id", "id", False, doc="derived from the other fields when empty"),
        Column("channel", "enum", False, CHANNELS, enum_reason="unknown_channel"),
    ),
    "interactions of subjects with catalogue items",
)

TABLES: dict[str, TableSpec] = {t.name: t for t in (CATALOG, PEOPLE, ENTERPRISES, LICENSES, EVENTS)}
INGEST_ORDER = ("catalog", "people", "enterprises", "licenses", "events")

# Every reason a row can be quarantined for, with its meaning (docs/data-contract.md lists the same).
REASONS: dict[str, str] = {
    "malformed_row": "the CSV row has a different number of fields than the header",
    "broken_quote": "a CSV line opening (or closing) a quoted field that swallowed the lines after it",
    "nul_byte": "a field contains a NUL byte",
    "missing_value": "a required field is empty",
    "bad_integer": "not a whole number",
    "out_of_range": "a number outside its allowed range (negative count or age, min_age > max_age)",
    "bad_bool": "not one of 1/0/true/false/yes/no",
    "bad_date": "not a real date in YYYY-MM-DD form, or before 1880",
    "bad_timestamp": "not an ISO-8601 timestamp (YYYY-MM-DD[T ]HH:MM:SS[.ffffff][Z|+HH:MM])",
    "ts_before_1900": "event time before 1900-01-01 00:00 UTC",
    "bad_value": "a value outside the allowed set (gender, district, industry, audience)",
    "unknown_action": "action is not one of " + "|".join(ACTIONS),
    "unknown_channel": "channel is not one of " + "|".join(CHANNELS),
    "bad_id": "a subject id that is not 1-64 characters from A-Z a-z 0-9 _ -",
    "resident_id_shaped": "an id, count or USCC field holds a resident ID number (the raw row keeps it masked)",
    "bad_format": "resident ID / USCC of the wrong length, alphabet or (ID) embedded birth date",
    "bad_checksum": "resident ID (GB 11643) or USCC (GB 32100) check character is wrong",
    "future_birth_date": "birth_date after as_of",
    "future_date": "founded_on / issued_on after as_of",
    "ts_after_as_of": "event time (Asia/Shanghai date) after as_of",
    "expires_before_issued": "expires_on earlier than issued_on",
    "unknown_license_type": "license_type not in the licence-type catalogue",
    "unknown_subject": "holder_id / subject_id is in neither the people nor the enterprises registry",
    "unknown_item": "item_id is not in the catalogue",
    "duplicate_key": "primary key already seen earlier in the same file (the first valid row is kept)",
}


@dataclass
class Context:
    """What the cross-table rules need: the reference date and the ids already registered."""

    as_of: date
    known_items: pl.Series | None = None
    known_subjects: pl.Series | None = None
    license_types: pl.Series | None = None
    keep_unknown_subjects: bool = False
    _subject_hashes: pl.Series | None = field(default=None, repr=False)

    def is_known_subject(self, col: pl.Expr) -> pl.Expr:
        """Membership in the registries, tested on 64-bit hashes of the ids.

        Three times cheaper than string membership over a million ids (it is the costliest event rule);
        the price is a chance of about N/2^64 per row (1e-13 for 1M subjects) of taking an unknown id
        for a known one. A registered id is never rejected: equal ids have equal hashes.
        """
        if self._subject_hashes is None:
            self._subject_hashes = self.known_subjects.hash().unique().implode()
        return col.hash().is_in(self._subject_hashes)

    @property
    def end_of_as_of_utc(self) -> datetime:
        """The first instant after ``as_of`` in Asia/Shanghai, in UTC (events at or after it are future)."""
        return end_of_as_of_day_utc(self.as_of)


def normalise(columns: list[str]) -> list[pl.Expr]:
    """Trim surrounding whitespace and turn empty strings into nulls (the contract treats them alike)."""
    out = []
    for c in columns:
        s = pl.col(c).str.strip_chars()
        out.append(pl.when(s.str.len_bytes() == 0).then(None).otherwise(s).alias(c))
    return out


def parse_bool(col: pl.Expr) -> pl.Expr:
    low = col.str.to_lowercase()
    return pl.when(low.is_in(TRUE_WORDS)).then(True).when(low.is_in(FALSE_WORDS)).then(False).otherwise(None)


def parse_date(col: pl.Expr) -> pl.Expr:
    d = col.str.to_date("%Y-%m-%d", strict=False)
    return pl.when(col.str.contains(DATE_SHAPE) & (d >= EARLIEST_DATE)).then(d).otherwise(None)


def parse_int(col: pl.Expr) -> pl.Expr:
    return pl.when(col.str.contains(INTEGER_SHAPE)).then(col.str.to_integer(strict=False)).otherwise(None)


def parse_ts(col: pl.Expr) -> pl.Expr:
    """ISO-8601 to UTC; a value without an offset is local Asia/Shanghai time (the portal's clock)."""
    col = pl.when(col.str.contains(TS_SHAPE)).then(col).otherwise(None)
    s = col.str.replace(" ", "T", literal=True).str.replace(r"Z$", "+00:00")
    s = pl.when(s.str.contains(r"[+-]\d\d:\d\d$")).then(s).otherwise(s + pl.lit("+08:00"))
    # +08:00 is Asia/Shanghai's offset for every date since 1992 (no DST), so appending it is exact.
    return s.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%:z", strict=False, time_unit="us", time_zone="UTC")


NAIVE_TS_FORMATS = ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S")


def parse_ts_series(values: pl.Series) -> pl.Series:
    """:func:`parse_ts` for a whole column, cheaply: the common naive shapes first (the shape of the first
    value goes first), the whole column at once while nothing has failed, then only the rows still
    unparsed; the full ISO-8601 parser on whatever is left."""
    first = values.drop_nulls().head(1).to_list()
    formats = sorted(NAIVE_TS_FORMATS, key=lambda f: not (first and ("T" in first[0]) == ("T" in f)))

    def naive_utc(v: pl.Series, fmt: str) -> pl.Series:
        naive = v.str.strptime(pl.Datetime("us"), fmt, strict=False, cache=False)
        # chrono also takes unpadded, space-padded or signed fields (`2025-6-1 9:00:00`), which make the
        # value shorter or longer than the contract's shape: a length is read from the offsets, far cheaper
        # than a regex over 30M values. Rows failing it go on to the full parser, which checks the shape.
        lengths = v.str.len_bytes()
        if lengths.min() != NAIVE_TS_BYTES or lengths.max() != NAIVE_TS_BYTES:
            naive = pl.select(pl.when(lengths == NAIVE_TS_BYTES).then(naive)).to_series()
        # Asia/Shanghai is UTC+8 with no DST since 1992, so a fixed shift is exact for portal-era times.
        return (naive - timedelta(hours=8)).dt.replace_time_zone("UTC")

    # Fast path: one format parses the whole column (the usual export), no gather/scatter.
    out = naive_utc(values, formats[0]).alias(values.name)
    todo = out.is_null() & values.is_not_null()
    for fmt in formats[1:]:
        if not todo.any():
            return out
        idx = todo.arg_true()
        out = out.scatter(idx, naive_utc(values.gather(idx), fmt))
        todo = todo & out.is_null()
    if todo.any():
        idx = todo.arg_true()
        rest = pl.select(parse_ts(pl.lit(values.gather(idx)))).to_series()
        out = out.scatter(idx, rest)
    return out


def parsed_columns(spec: TableSpec, present: set[str]) -> list[pl.Expr]:
    """Typed versions of the contract columns, named ``_p_<column>`` (null where unparseable)."""
    out = []
    for c in spec.columns:
        if c.name not in present:
            continue
        col = pl.col(c.name)
        if c.kind == "date":
            out.append(parse_date(col).alias(f"_p_{c.name}"))
        elif c.kind == "bool":
            out.append(parse_bool(col).alias(f"_p_{c.name}"))
        elif c.kind == "int":
            out.append(parse_int(col).alias(f"_p_{c.name}"))
    return out


def _parse_ts_columns(df: pl.DataFrame, spec: TableSpec, present: set[str]) -> pl.DataFrame:
    ts_cols = [c.name for c in spec.columns if c.kind == "ts" and c.name in present]
    return df.with_columns([parse_ts_series(df[c]).alias(f"_p_{c}") for c in ts_cols]) if ts_cols else df


def row_rules(
    spec: TableSpec,
    present: set[str],
    ctx: Context,
    nul_columns: set[str] | None = None,
    long_columns: set[str] | None = None,
) -> list[tuple[str, str, pl.Expr]]:
    """``(field, reason, broken)`` for every rule of ``spec``, in checking order.

    ``nul_columns``: the columns known to contain a NUL byte somewhere (None = not known, check all).
    ``long_columns``: the columns holding a value long enough to carry a resident ID, whose per-row answer
    is precomputed as ``_idshape_<column>`` (None = nothing precomputed, check every such column here).
    """
    rules: list[tuple[str, str, pl.Expr]] = []
    cols = [c for c in spec.columns if c.name in present]
    for c in cols:
        if nul_columns is None or c.name in nul_columns:
            rules.append((c.name, "nul_byte", pl.col(c.name).str.contains("\x00", literal=True)))
    for c in cols:
        if c.required:
            rules.append((c.name, "missing_value", pl.col(c.name).is_null()))
    for c in cols:
        col, parsed = pl.col(c.name), pl.col(f"_p_{c.name}")
        given = col.is_not_null()
        if long_columns is None:
            may_hold_id, id_shaped = True, contains_resident_id(col)
        else:
            may_hold_id, id_shaped = c.name in long_columns, pl.col(f"_idshape_{c.name}")
        registered_only = spec is EVENTS and ctx.known_subjects is not None and not ctx.keep_unknown_subjects
        if c.kind == "subject_id" and not registered_only:
            # (An event's subject must be registered, so unknown_subject covers this rule there: one regex
            # less over 30M rows.)
            rules.append((c.name, "bad_id", given & ~col.str.contains(SUBJECT_ID_PATTERN)))
        if c.kind in ("id", "subject_id", "int") and may_hold_id:
            # Ids are keys: masking them would merge different subjects, so the row is refused instead.
            rules.append((c.name, "resident_id_shaped", id_shaped))
        if c.kind == "uscc" and may_hold_id:
            # All-digit USCCs exist: a valid one is kept unless it is also a valid resident ID.
            rules.append(
                (c.name, "resident_id_shaped",
                 id_shaped & (resident_id_problem(col).is_null() | uscc_problem(col).is_not_null()))
            )
        if c.kind == "date":
            rules.append((c.name, "bad_date", given & parsed.is_null()))
        elif c.kind == "bool":
            rules.append((c.name, "bad_bool", given & parsed.is_null()))
        elif c.kind == "int":
            rules.append((c.name, "bad_integer", given & parsed.is_null()))
            rules.append((c.name, "out_of_range", parsed < 0))
        elif c.kind == "ts":
            rules.append((c.name, "bad_timestamp", given & parsed.is_null()))
        elif c.kind == "enum":
            rules.append((c.name, c.enum_reason, given & ~col.is_in(c.values)))
        elif c.kind == "resident_id":
            problem = resident_id_problem(col)
            rules.append((c.name, "bad_format", problem == "bad_format"))
            rules.append((c.name, "bad_checksum", problem == "bad_checksum"))
        elif c.kind == "uscc":
            problem = uscc_problem(col)
            rules.append((c.name, "bad_format", problem == "bad_format"))
            rules.append((c.name, "bad_checksum", problem == "bad_checksum"))
    # Cross-field and cross-table rules.
    if spec is PEOPLE:
        rules.append(("birth_date", "future_birth_date", pl.col("_p_birth_date") > ctx.as_of))
    if spec is ENTERPRISES:
        rules.append(("founded_on", "future_date", pl.col("_p_founded_on") > ctx.as_of))
    if spec is CATALOG and {"min_age", "max_age"} <= present:
        rules.append(("min_age", "out_of_range", pl.col("_p_min_age") > pl.col("_p_max_age")))
    if spec is LICENSES:
        rules.append(("issued_on", "future_date", pl.col("_p_issued_on") > ctx.as_of))
        if "expires_on" in present:
            rules.append(
                ("expires_on", "expires_before_issued", pl.col("_p_expires_on") < pl.col("_p_issued_on"))
            )
        if ctx.license_types is not None:
            rules.append(
                ("license_type", "unknown_license_type", ~pl.col("license_type").is_in(ctx.license_types.implode()))
            )
        if ctx.known_subjects is not None:
            rules.append(("holder_id", "unknown_subject", ~ctx.is_known_subject(pl.col("holder_id"))))
    if spec is EVENTS:
        rules.append(("ts", "ts_before_1900", pl.col("_p_ts") < EARLIEST_TS))
        rules.append(("ts", "ts_after_as_of", pl.col("_p_ts") >= ctx.end_of_as_of_utc))
        if ctx.known_items is not None:
            rules.append(("item_id", "unknown_item", ~pl.col("item_id").is_in(ctx.known_items.implode())))
        if ctx.known_subjects is not None and not ctx.keep_unknown_subjects:
            rules.append(("subject_id", "unknown_subject", ~ctx.is_known_subject(pl.col("subject_id"))))
    return rules


def _with_resident_id_flags(
    spec: TableSpec, df: pl.DataFrame, present: set[str], ctx: Context
) -> tuple[pl.DataFrame, set[str]]:
    """``df`` with ``_idshape_<column>`` (does the value hold a resident ID?) for the id, count and USCC
    columns that have a value of 18 bytes or more, and the names of those columns. Only such values can
    hold one, so the regex runs on them alone: a length is read from the offsets, a regex reads every byte
    (the event stream's ids are mostly short). An event's item_id checked against the catalogue is left out:
    the catalogue's own ingest refused such ids, so unknown_item catches one (its raw row is masked)."""
    names = [
        c.name for c in spec.columns
        if c.name in present and c.kind in ("id", "subject_id", "int", "uscc")
        and not (spec is EVENTS and c.name == "item_id" and ctx.known_items is not None)
    ]
    flags = []
    for name in names:
        long = df.select(pl.col(name).str.len_bytes().fill_null(0) >= 18).to_series()
        if not long.any():
            continue
        idx = long.arg_true()
        shaped = df[name].gather(idx).to_frame().select(contains_resident_id(pl.col(name))).to_series()
        flags.append(pl.repeat(False, df.height, eager=True).scatter(idx, shaped).alias(f"_idshape_{name}"))
    return (df.with_columns(flags) if flags else df), {f.name.removeprefix("_idshape_") for f in flags}


def validate(
    spec: TableSpec, frame: pl.DataFrame, ctx: Context, *, trim: bool = True, nul_columns: set[str] | None = None
) -> pl.DataFrame:
    """Add ``_p_*`` typed columns and ``_field`` / ``_reason`` (null on rows that pass every rule), and
    ``_idshape_*`` flags for the id columns long enough to hold a resident ID.

    ``frame`` holds the file's columns as strings. Contract columns are normalised in place (trimmed,
    empty = null) unless ``trim`` is false (the event stream: its reader already turns empty fields into
    nulls, and trimming 30M rows would cost more than the rest of the checks). Columns outside the
    contract are left as they came. Duplicate keys are not checked here: that needs the whole file (see
    :func:`mark_duplicates`).
    """
    present = set(spec.names) & set(frame.columns)
    # Lazy, not eager, throughout: only the lazy engine eliminates common subexpressions (a checksum's 17
    # digit terms share one parse of the id: 5x less CPU than the same select run eagerly).
    df = frame.lazy()
    if trim:
        df = df.with_columns(normalise([c for c in spec.names if c in present]))
    df = _parse_ts_columns(df.with_columns(parsed_columns(spec, present)).collect(), spec, present)
    df, long_columns = _with_resident_id_flags(spec, df, present, ctx)
    rules = row_rules(spec, present, ctx, nul_columns, long_columns)
    none = pl.lit(None, dtype=pl.String)
    if not rules:
        return df.with_columns(none.alias("_field"), none.alias("_reason"))
    # Every rule evaluated once into one "broken anywhere" flag: on a clean batch (the usual case) that is
    # all; the first-broken-rule chain below then runs on the bad rows only.
    bad = df.lazy().select(pl.any_horizontal([r[2].fill_null(False) for r in rules]).alias("_bad")).collect()["_bad"]
    if not bad.any():
        return df.with_columns(none.alias("_field"), none.alias("_reason"))
    idx = bad.arg_true()
    sub = df.gather(idx)
    # One chain yielding the index of the first broken rule (built in reverse so the first listed wins),
    # then index -> field / reason: each rule is evaluated once however many outputs it feeds.
    first: pl.Expr = pl.lit(None, dtype=pl.Int32)
    for i in range(len(rules) - 1, -1, -1):
        first = pl.when(rules[i][2].fill_null(False)).then(pl.lit(i, dtype=pl.Int32)).otherwise(first)
    fields = {i: r[0] for i, r in enumerate(rules)}
    reasons = {i: r[1] for i, r in enumerate(rules)}
    found = sub.lazy().select(first.alias("_rule")).select(
        pl.col("_rule").replace_strict(fields, default=None, return_dtype=pl.String).alias("_field"),
        pl.col("_rule").replace_strict(reasons, default=None, return_dtype=pl.String).alias("_reason"),
    ).collect()
    blank = pl.Series([None], dtype=pl.String).new_from_index(0, df.height)
    return df.with_columns(
        blank.scatter(idx, found["_field"]).alias("_field"),
        blank.scatter(idx, found["_reason"]).alias("_reason"),
    )


def mark_duplicates(df: pl.DataFrame, key: str) -> pl.DataFrame:
    """Among rows that passed every other rule, mark all but the first (by ``_line``) of each key."""
    if not df["_line"].is_sorted():
        df = df.sort("_line", maintain_order=True)
    ok = pl.col("_reason").is_null() & pl.col(key).is_not_null()
    # Keys of rows already rejected are masked to null, so a bad first row never shadows a good one.
    dup = ok & ~pl.when(ok).then(pl.col(key)).is_first_distinct()
    return df.with_columns(
        pl.when(dup).then(pl.lit(key)).otherwise(pl.col("_field")).alias("_field"),
        pl.when(dup).then(pl.lit("duplicate_key")).otherwise(pl.col("_reason")).alias("_reason"),
    )


def raw_json(columns: list[str]) -> pl.Expr:
    """The row as JSON for the quarantine, with the resident ID number masked, and so is anything shaped
    like one in any other column (extra columns included)."""
    fields = [
        mask_id_number(pl.col(c)).alias(c) if c == "id_number" else mask_resident_ids(pl.col(c)).alias(c)
        for c in columns
    ]
    return pl.struct(fields).struct.json_encode()


def stored_text(spec: TableSpec, name: str, col: pl.Expr) -> pl.Expr:
    """A column's value as stored: free text keeps its content with any resident ID in it masked."""
    return mask_resident_ids(col) if spec.column(name).kind == "text" else col

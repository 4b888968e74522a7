"""The data contract's validators: checksums (scalar and Polars agree), masks and row rules."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest
from hypothesis import given, settings as hsettings, strategies as st

from data import contract
from data.contract import (
    EVENTS,
    LICENSES,
    PEOPLE,
    USCC_ALPHABET,
    Context,
    is_valid_resident_id,
    is_valid_uscc,
    resident_id_check_char,
    uscc_check_char,
)

# Each example runs a Polars query: on a busy 2-core machine one can take longer than hypothesis' 200 ms
# deadline, which would fail a correct validator, so the property tests have none.

# Published examples: the GB 11643 sample number and a commonly cited GB 32100 sample code.
KNOWN_IDS = ["11010519491231002X", "440524188001010014"]
KNOWN_USCC = ["91350100M000100Y43"]

digits = st.text(alphabet="0123456789", min_size=1, max_size=1)
birth = st.dates(min_value=date(1900, 1, 1), max_value=date(2025, 12, 31))


@st.composite
def id_bodies(draw) -> str:
    area = draw(st.text(alphabet="0123456789", min_size=6, max_size=6))
    seq = draw(st.text(alphabet="0123456789", min_size=3, max_size=3))
    return area + draw(birth).strftime("%Y%m%d") + seq


uscc_bodies = st.text(alphabet=USCC_ALPHABET, min_size=17, max_size=17)


def _polars_problem(fn, values: list[str]) -> list[str | None]:
    return pl.DataFrame({"v": values}, schema={"v": pl.String}).select(fn(pl.col("v")).alias("v"))["v"].to_list()


@pytest.mark.parametrize("value", KNOWN_IDS)
def test_known_resident_ids_are_valid(value):
    assert is_valid_resident_id(value)
    assert _polars_problem(contract.resident_id_problem, [value]) == [None]


@pytest.mark.parametrize("value", KNOWN_USCC)
def test_known_uscc_is_valid(value):
    assert is_valid_uscc(value)
    assert _polars_problem(contract.uscc_problem, [value]) == [None]


@hsettings(deadline=None)
@given(id_bodies())
def test_resident_id_round_trip(body):
    full = body + resident_id_check_char(body)
    assert is_valid_resident_id(full)
    assert is_valid_resident_id(full.lower())  # a lower-case x is the same check character
    assert _polars_problem(contract.resident_id_problem, [full]) == [None]


@hsettings(deadline=None)
@given(id_bodies(), st.integers(min_value=0, max_value=17), st.sampled_from("0123456789X"))
def test_resident_id_single_substitution_is_caught(body, pos, ch):
    full = body + resident_id_check_char(body)
    if full[pos] == ch or (pos < 17 and ch == "X"):
        return
    broken = full[:pos] + ch + full[pos + 1 :]
    ok_scalar = is_valid_resident_id(broken)
    polars_says = _polars_problem(contract.resident_id_problem, [broken])[0]
    # MOD 11-2 detects every single-character substitution; a changed date digit may also break the date.
    assert not ok_scalar
    assert polars_says in ("bad_checksum", "bad_format")


@hsettings(deadline=None)
@given(uscc_bodies)
def test_uscc_round_trip(body):
    full = body + uscc_check_char(body)
    assert is_valid_uscc(full)
    assert _polars_problem(contract.uscc_problem, [full]) == [None]


@hsettings(deadline=None)
@given(uscc_bodies, st.integers(min_value=0, max_value=17), st.sampled_from(USCC_ALPHABET))
def test_uscc_single_substitution_is_caught(body, pos, ch):
    full = body + uscc_check_char(body)
    if full[pos] == ch:
        return
    broken = full[:pos] + ch + full[pos + 1 :]
    assert not is_valid_uscc(broken)
    assert _polars_problem(contract.uscc_problem, [broken]) == ["bad_checksum"]


@hsettings(max_examples=200, deadline=None)
@given(st.text(max_size=20))
def test_polars_and_scalar_validators_agree_on_any_text(value):
    assert (_polars_problem(contract.resident_id_problem, [value])[0] is None) == is_valid_resident_id(value)
    assert (_polars_problem(contract.uscc_problem, [value])[0] is None) == is_valid_uscc(value)


def test_bad_shapes_are_bad_format():
    assert _polars_problem(contract.resident_id_problem, ["1101051949123100", "11010519491331002X", "11010519491231002Y"]) == [
        "bad_format",  # too short
        "bad_format",  # month 13
        "bad_format",  # Y is no check character
    ]
    # I, O, S, V, Z are not in the USCC alphabet.
    assert _polars_problem(contract.uscc_problem, ["91350100M000100YI3", "short"]) == ["bad_format", "bad_format"]


def test_mask_keeps_only_the_address_code():
    out = _polars_problem(contract.mask_id_number, ["11010519491231002X", "123", "", None])
    assert out == ["110105" + "*" * 12, "*" * 18, "", None]


def _check(spec, rows: dict, ctx: Context) -> list[tuple[str | None, str | None]]:
    frame = pl.DataFrame(rows, schema={k: pl.String for k in rows}).with_row_index("_line", offset=2).cast({"_line": pl.Int64})
    out = contract.validate(spec, frame, ctx)
    if spec.key in rows:
        out = contract.mark_duplicates(out, spec.key)
    return list(zip(out["_field"].to_list(), out["_reason"].to_list()))


def test_people_rules_first_broken_rule_wins():
    ok_id = "11010519491231002X"
    rows = {
        "person_id": ["P1", "P2", "P3", "P4", "P5", "P6", "P1", "P7"],
        "birth_date": ["1949-12-31", "2031-01-01", "1990-02-30", "1990-01-01", "1990-01-01", "1990-01-01", "1990-01-01", "1990-01-01"],
        "gender": ["F", "M", "M", "X", "M", "M", "M", "M"],
        "district": ["黄浦区"] * 7 + ["火星区"],
        "local_hukou": ["1", "0", "0", "0", "maybe", "0", "0", "0"],
        "id_number": [ok_id, None, None, None, None, "110105194912310021", None, None],
    }
    assert _check(PEOPLE, rows, Context(as_of=date(2030, 1, 1))) == [
        (None, None),
        ("birth_date", "future_birth_date"),
        ("birth_date", "bad_date"),
        ("gender", "bad_value"),
        ("local_hukou", "bad_bool"),
        ("id_number", "bad_checksum"),
        ("person_id", "duplicate_key"),
        ("district", "bad_value"),
    ]


def test_duplicate_keeps_first_valid_row():
    rows = {
        "license_id": ["L1", "L1", "L1"],
        "holder_id": ["P1", "P1", "P1"],
        "license_type": ["passport"] * 3,
        "issued_on": ["bad", "2020-01-01", "2020-01-02"],
        "expires_on": [None, "2019-01-01", None],
    }
    # Row 1 has a bad date, row 2 expires before issue, so row 3 is the first valid L1 and is kept.
    assert _check(LICENSES, rows, Context(as_of=date(2025, 1, 1))) == [
        ("issued_on", "bad_date"),
        ("expires_on", "expires_before_issued"),
        (None, None),
    ]


def test_event_timestamps_naive_is_shanghai_and_after_as_of_is_future():
    rows = {
        "subject_id": ["P1"] * 5,
        "item_id": ["I1"] * 5,
        "action": ["view", "view", "view", "view", "leap"],
        "ts": ["2025-01-01 23:59:59", "2025-01-02T00:00:00", "2025-01-01T16:00:00Z", "yesterday", "2024-01-01 00:00:00"],
    }
    ctx = Context(as_of=date(2025, 1, 1))
    assert _check(EVENTS, rows, ctx) == [
        (None, None),
        ("ts", "ts_after_as_of"),  # midnight local on the 2nd is after as_of
        ("ts", "ts_after_as_of"),  # 16:00 UTC on the 1st is 00:00 local on the 2nd
        ("ts", "bad_timestamp"),
        ("action", "unknown_action"),
    ]
    frame = pl.DataFrame({"ts": ["2025-01-01 08:00:00", "2025-01-01T08:00:00.5+09:00"]})
    parsed = frame.select(contract.parse_ts(pl.col("ts")))["ts"].to_list()
    assert [p.isoformat() for p in parsed] == ["2025-01-01T00:00:00+00:00", "2024-12-31T23:00:00.500000+00:00"]

"""Shared constants and small vectorised date helpers of the synthetic city."""

from __future__ import annotations

from datetime import date

import numpy as np

EPOCH = date(1970, 1, 1)
DAY = 86_400
YEAR = 365.25
WINDOW_DAYS = 730  # life events and interactions cover the two years before as_of

# Shanghai's 16 districts: name, resident-ID area code, resident population in 10k (2020 census).
DISTRICTS: tuple[tuple[str, int, int], ...] = (
    ("黄浦区", 310101, 66),
    ("徐汇区", 310104, 111),
    ("长宁区", 310105, 69),
    ("静安区", 310106, 97),
    ("普陀区", 310107, 124),
    ("虹口区", 310109, 76),
    ("杨浦区", 310110, 124),
    ("闵行区", 310112, 265),
    ("宝山区", 310113, 223),
    ("嘉定区", 310114, 183),
    ("浦东新区", 310115, 568),
    ("金山区", 310116, 80),
    ("松江区", 310117, 191),
    ("青浦区", 310118, 127),
    ("奉贤区", 310120, 114),
    ("崇明区", 310151, 64),
)
DISTRICT_NAMES = np.array([d[0] for d in DISTRICTS])
DISTRICT_CODES = np.array([d[1] for d in DISTRICTS], dtype=np.int64)
DISTRICT_WEIGHTS = np.array([d[2] for d in DISTRICTS], dtype=float)
CENTRAL = np.isin(DISTRICT_NAMES, ["黄浦区", "徐汇区", "长宁区", "静安区", "普陀区", "虹口区", "杨浦区"])

# Birthplace area codes of people without local hukou (Jiangsu, Zhejiang, Anhui, Henan, Jiangxi, ...).
ORIGIN_AREA_CODES = np.array(
    [320102, 320582, 321002, 330104, 330602, 340102, 341202, 341502, 410102, 411302,
     360102, 362502, 420102, 421002, 510104, 511302, 430102, 370102, 350102, 130102],
    dtype=np.int64,
)

OCCUPATIONS = (
    "student", "teacher", "security_guard", "medical_worker", "driver",
    "it_professional", "self_employed", "office_worker",
)
LIFE_EVENTS = (
    "birth", "second_child", "school_entry", "graduation", "job_seeking",
    "home_purchase", "marriage", "retirement", "bereavement",
)
ACTIONS = ("view", "click", "favorite", "consult", "apply", "complete")
CHANNELS = ("web", "app", "window", "kiosk")
INDUSTRIES = tuple("ABCDEFGHIJKLMNOPQRST")


def day_number(d: date) -> int:
    """Days since 1970-01-01."""
    return (d - EPOCH).days


def ymd(days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Days since 1970-01-01 -> (year, month, day) arrays (H. Hinnant's civil_from_days, integer-only
    so that millions of dates convert in milliseconds)."""
    z = np.asarray(days, dtype=np.int64) + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = np.where(mp < 10, mp + 3, mp - 9)
    year = yoe + era * 400 + (month <= 2)
    return year, month, day


def _days_from_civil(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * np.where(month > 2, month - 3, month + 9) + 2) // 5 + day - 1
    return era * 146_097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719_468


def days_of(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    """(year, month, day) arrays -> days since 1970-01-01 (day clipped to the month's length)."""
    year, month, day = (np.asarray(a, dtype=np.int64) for a in (year, month, day))
    first = _days_from_civil(year, month, np.ones_like(month))
    next_year = year + (month == 12)
    next_month = np.where(month == 12, 1, month + 1)
    length = _days_from_civil(next_year, next_month, np.ones_like(month)) - first
    return first + np.minimum(day, length) - 1


def age_years(birth_days: np.ndarray, at_days: np.ndarray | int) -> np.ndarray:
    """Completed years of age on ``at_days`` (birthday counted on the day itself)."""
    by, bm, bd = ymd(birth_days)
    ay, am, ad = ymd(np.broadcast_to(at_days, np.shape(birth_days)))
    return ay - by - ((am * 100 + ad) < (bm * 100 + bd))


def birthday_at_age(birth_days: np.ndarray, years: np.ndarray | int) -> np.ndarray:
    """The day a person born on ``birth_days`` reaches ``years`` (29 Feb -> 28 Feb in common years)."""
    by, bm, bd = ymd(birth_days)
    return days_of(by + years, bm, bd)


def pick(rng: np.random.Generator, n: int, weights: np.ndarray) -> np.ndarray:
    """``n`` indices drawn with the given (unnormalised) weights."""
    cdf = np.cumsum(weights, dtype=float)
    return np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"), len(weights) - 1)


def pick_rows(rng: np.random.Generator, weights: np.ndarray) -> np.ndarray:
    """One column index per row of a (n, k) weight matrix, drawn with that row's weights."""
    cdf = np.cumsum(weights, axis=1)
    u = rng.random(len(weights)) * cdf[:, -1]
    return np.minimum((cdf <= u[:, None]).sum(axis=1), weights.shape[1] - 1)


def uniform_days(rng: np.random.Generator, lo: np.ndarray | int, hi: np.ndarray | int, n: int | None = None) -> np.ndarray:
    """Integer days uniform in [lo, hi) (hi <= lo gives lo)."""
    lo = np.asarray(lo, dtype=np.int64)
    hi = np.asarray(hi, dtype=np.int64)
    size = n if n is not None else np.broadcast(lo, hi).shape
    span = np.maximum(hi - lo, 1)
    return lo + (rng.random(size) * span).astype(np.int64)

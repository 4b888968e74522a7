"""``generate_city``: write a synthetic city's export (the data contract) and its ground truth."""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl

from data.errors import ConfigError
from data.reference import CATALOG_FILE, load_catalog, load_license_types
from data.synth import behaviour as bh
from data.synth.catalogue import Catalogue, build_catalogue
from data.synth.common import (
    CHANNELS, DAY, DISTRICT_CODES, DISTRICT_NAMES, INDUSTRIES, LIFE_EVENTS, OCCUPATIONS, ORIGIN_AREA_CODES,
    WINDOW_DAYS, ACTIONS, age_years, day_number, ymd,
)
from data.synth.enterprises import Enterprises, build_enterprises, size_band
from data.synth.ids import resident_ids, usccs
from data.synth.licences import Licences, build_licences
from data.synth.population import MARITAL, Population, build_population, crowds
from data.synth.truth_readme import TRUTH_README

# 1M people + 100k enterprises -> about 30M events.
DEFAULT_EVENTS_PER_SUBJECT = 27.3
CHUNK_SUBJECTS = 100_000
FORMATS = ("csv", "parquet")
Progress = Callable[[str, int, int], None]

# Life events: (items per event, anchor spread in days around the event day).
_LIFE = {
    "birth": (6, (-90, 60)),
    "second_child": (3, (-90, 60)),
    "school_entry": (3, (-150, -20)),
    "graduation": (3, (-120, 60)),
    "job_seeking": (3, (-20, 90)),
    "home_purchase": (4, (0, 90)),
    "marriage": (3, (-30, 10)),
    "retirement": (3, (-30, 45)),
    "bereavement": (2.5, (0, 60)),
}
# Crowd -> (catalogue tag keys browsed, episodes per member over two years).
_CROWD_INTEREST = {
    "elderly": (("crowd.elderly",), 2.0),
    "hardship": (("crowd.hardship",), 3.0),
    "disabled": (("crowd.disabled",), 3.0),
    "parent_young_child": (("crowd.parent_young_child", "crowd.child"), 2.5),
    "non_local": (("crowd.non_local",), 1.5),
}


@dataclass
class SynthSummary:
    """What ``generate_city`` wrote."""

    out_dir: str
    format: str
    seed: int
    as_of: str
    people: int
    households: int
    enterprises: int
    licenses: int
    events: int
    life_events: int
    episode_events: int  # events planned by latent episodes (the rest of the log is popularity noise)
    seconds: float
    skipped_license_types: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _check_args(people, enterprises, seed, as_of, fmt, events_per_person) -> date:
    if not isinstance(people, int) or isinstance(people, bool) or people < 1:
        raise ConfigError(f"--people must be a whole number of at least 1, got {people!r}")
    if not isinstance(enterprises, int) or isinstance(enterprises, bool) or enterprises < 0:
        raise ConfigError(f"--enterprises must be a whole number of at least 0, got {enterprises!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"--seed must be a non-negative whole number, got {seed!r}")
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if events_per_person is not None and (
        not isinstance(events_per_person, (int, float)) or not math.isfinite(events_per_person) or events_per_person < 0
    ):
        raise ConfigError(f"--events-per-person must be a non-negative number, got {events_per_person!r}")
    if isinstance(as_of, str):
        try:
            as_of = date.fromisoformat(as_of)
        except ValueError:
            raise ConfigError(f"--as-of {as_of!r} is not a date (expected YYYY-MM-DD)") from None
    if not isinstance(as_of, date) or not (date(2000, 1, 1) <= as_of <= date(2100, 1, 1)):
        raise ConfigError(f"--as-of must be a date between 2000-01-01 and 2100-01-01, got {as_of!r}")
    return as_of


def _rng(seed: int, *stream: int) -> np.random.Generator:
    """An independent stream per stage (and per chunk), so stages never shift each other's draws."""
    return np.random.default_rng(np.random.SeedSequence([seed, *stream]))


def generate_city(
    out_dir: Path | str,
    people: int,
    enterprises: int,
    seed: int,
    as_of: date | str,
    fmt: str = "csv",
    progress: Progress | None = None,
    *,
    events_per_person: float | None = None,
    data_dir: Path | str | None = None,
) -> SynthSummary:
    """Write OUT/export (people, enterprises, licenses, events, catalog) and OUT/truth.

    ``events_per_person`` is the mean number of events per subject (people and enterprises alike);
    the default gives about 30M events for 1M people and 100k enterprises. ``progress`` is a rich
    ``Progress`` (what the CLI passes) or a callable ``(stage, done, total)``. The same arguments give
    byte-identical files.
    """
    started = time.perf_counter()
    as_of_date = _check_args(people, enterprises, seed, as_of, fmt, events_per_person)
    per_subject = DEFAULT_EVENTS_PER_SUBJECT if events_per_person is None else float(events_per_person)
    if data_dir is None:
        from data.settings import get_settings

        data_dir = get_settings().data_dir
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    report = _reporter(progress)
    catalog_df = load_catalog(data_dir)
    license_types = load_license_types(data_dir)
    day0 = day_number(as_of_date)

    report("registries", 0, 4)
    cat = build_catalogue(catalog_df, _rng(seed, 1))
    pop = build_population(_rng(seed, 2), people, day0)
    report("registries", 1, 4)
    ent = build_enterprises(_rng(seed, 3), enterprises, pop, day0)
    lic = build_licences(_rng(seed, 4), license_types, pop, ent, day0)
    report("registries", 2, 4)

    export, truth = out / "export", out / "truth"
    export.mkdir(parents=True, exist_ok=True)
    truth.mkdir(parents=True, exist_ok=True)
    ids = _Ids(pop.n, ent.n)
    _write(_people_frame(_rng(seed, 5), pop, ids), export / "people", fmt)
    _write(_enterprise_frame(_rng(seed, 6), ent, ids), export / "enterprises", fmt)
    n_licences = _write(_licence_frame(lic, ids), export / "licenses", fmt)
    if fmt == "csv":
        shutil.copyfile(Path(data_dir) / CATALOG_FILE, export / CATALOG_FILE)
    else:
        _write(catalog_df, export / "catalog", fmt)
    report("registries", 3, 4)

    plan = _plan_episodes(_rng(seed, 8), cat, pop, ent, lic, license_types, day0)
    episodes = plan.builder.build()
    mask = bh.slot_masks(_rng(seed, 9), episodes, cat)
    report_due = _annual_report_due(plan.report_filed, ent, day0)
    n_truth = _write_truth(truth, pop, ent, ids, report_due, day0)
    report("registries", 4, 4)

    n_events = _write_events(seed, export / "events", fmt, cat, pop, ent, ids, episodes, mask,
                             plan.activity, plan.eligibility, per_subject, day0, report)
    return SynthSummary(
        out_dir=str(out), format=fmt, seed=seed, as_of=as_of_date.isoformat(), people=pop.n,
        households=int(pop.household.max()) + 1, enterprises=ent.n, licenses=n_licences, events=n_events,
        life_events=n_truth, episode_events=int(mask.sum()), seconds=round(time.perf_counter() - started, 2), skipped_license_types=lic.skipped,
    )


def _reporter(progress) -> Progress:
    """Progress as a callable, whether the caller passed a rich ``Progress``, a callable or nothing."""
    if progress is None:
        return lambda stage, done, total: None
    if hasattr(progress, "add_task"):
        tasks: dict[str, object] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(f"synth {stage}", total=total)
            progress.update(tasks[stage], completed=done, total=total)

        return update
    return progress


class _Ids:
    """Export ids: P0000001.., E000001.. (wider when the city is bigger)."""

    def __init__(self, n_people: int, n_enterprises: int):
        self.n = n_people
        self.pw = max(7, len(str(n_people)))
        self.ew = max(6, len(str(n_enterprises)))

    def subject_expr(self, col: str) -> pl.Expr:
        c = pl.col(col)
        return (
            pl.when(c < self.n)
            .then(pl.lit("P") + (c + 1).cast(pl.String).str.zfill(self.pw))
            .otherwise(pl.lit("E") + (c - self.n + 1).cast(pl.String).str.zfill(self.ew))
        )


def _lookup(values, idx: np.ndarray) -> pl.Series:
    """``values[idx]`` as a string Series (much faster than building numpy unicode arrays)."""
    return pl.Series(list(values), dtype=pl.String).gather(np.asarray(idx, np.int64))


def _days(values: np.ndarray) -> pl.Series:
    return pl.Series(np.asarray(values, np.int32)).cast(pl.Date)


def _masked(values: np.ndarray | pl.Series, keep: np.ndarray) -> pl.Series:
    """A string column that is null where ``keep`` is False."""
    v = values if isinstance(values, pl.Series) else pl.Series(np.asarray(values).astype(str))
    return pl.DataFrame({"v": v, "k": np.asarray(keep, bool)}).select(pl.when(pl.col("k")).then(pl.col("v"))).to_series()


def _write(df: pl.DataFrame, stem: Path, fmt: str) -> int:
    if fmt == "csv":
        df.write_csv(stem.with_suffix(".csv"), date_format="%Y-%m-%d")
    else:
        df.write_parquet(stem.with_suffix(".parquet"), compression="zstd", statistics=True)
    return df.height


def _people_frame(rng: np.random.Generator, pop: Population, ids: _Ids) -> pl.DataFrame:
    n = pop.n
    # Area code: locals mostly born in their district, migrants in their home province.
    born_here = rng.random(n) < 0.8
    area = np.where(
        pop.local,
        np.where(born_here, DISTRICT_CODES[pop.district], DISTRICT_CODES[rng.integers(0, len(DISTRICT_CODES), n)]),
        ORIGIN_AREA_CODES[rng.integers(0, len(ORIGIN_AREA_CODES), n)],
    )
    y, m, d = ymd(pop.birth)
    yyyymmdd = y * 10000 + m * 100 + d
    seq = rng.integers(0, 500, n) * 2 + pop.male.astype(np.int64)  # odd = man, even = woman
    id_number = resident_ids(area, yyyymmdd, seq)
    for _ in range(50):  # same area, birthday and sequence: draw again until every number is unique
        _, first, counts = np.unique(id_number, return_index=True, return_counts=True)
        dup = np.ones(n, bool)
        dup[first] = False
        if not dup.any():
            break
        k = dup.sum()
        seq[dup] = rng.integers(0, 500, k) * 2 + pop.male[dup]
        id_number[dup] = resident_ids(area[dup], yyyymmdd[dup], seq[dup])
    has_id = rng.random(n) < 0.95
    occupation = _masked(_lookup(OCCUPATIONS, np.maximum(pop.occupation, 0)), pop.occupation_known)
    return pl.DataFrame({
        "_i": np.arange(n),
        "birth_date": _days(pop.birth),
        "gender": _lookup(("F", "M"), pop.male.astype(np.int64)),
        "district": _lookup(DISTRICT_NAMES, pop.district),
        "local_hukou": pop.local,
        "id_number": _masked(id_number, has_id),
        "marital_status": _lookup(MARITAL, pop.marital),
        "household_id": pop.household + 1,
        "occupation": occupation,
        "low_income": pop.low_income,
        "disability": pop.disability,
    }).select(
        ids.subject_expr("_i").alias("person_id"),
        "birth_date", "gender", "district", "local_hukou", "id_number", "marital_status",
        (pl.lit("H") + pl.col("household_id").cast(pl.String).str.zfill(max(7, len(str(n))))).alias("household_id"),
        "occupation", "low_income", "disability",
    )


def _enterprise_frame(rng: np.random.Generator, ent: Enterprises, ids: _Ids) -> pl.DataFrame:
    m = ent.n
    # An affine permutation of 0..10^8-1 gives every enterprise a distinct organisation number.
    a = int(rng.integers(1, 10**7)) * 10 + 3
    org = (a * np.arange(m, dtype=np.int64) + int(rng.integers(0, 10**8))) % 10**8
    codes = usccs(DISTRICT_CODES[ent.district], org)
    has = rng.random(m) < 0.98
    return pl.DataFrame({
        "_i": ids.n + np.arange(m),
        "name": ent.names,
        "industry": _lookup(INDUSTRIES, ent.industry),
        "district": _lookup(DISTRICT_NAMES, ent.district),
        "founded_on": _days(ent.founded),
        "employees": ent.employees,
        "uscc": _masked(codes, has),
        "_rep": ent.legal_rep,
    }).select(
        ids.subject_expr("_i").alias("enterprise_id"), "name", "industry", "district", "founded_on", "employees",
        "uscc", pl.when(pl.col("_rep") >= 0).then(ids.subject_expr("_rep")).alias("legal_rep_id"),
    )


def _licence_frame(lic: Licences, ids: _Ids) -> pl.DataFrame:
    order = np.lexsort((lic.issued, lic.type_idx, lic.holder))
    n = len(order)
    return pl.DataFrame({
        "license_id": pl.Series(np.arange(1, n + 1)).cast(pl.String).str.zfill(max(9, len(str(n)))),
        "_h": lic.holder[order],
        "license_type": _lookup(lic.types, lic.type_idx[order]),
        "issued_on": _days(lic.issued[order]),
        "_e": lic.expires[order],
    }).select(
        (pl.lit("L") + pl.col("license_id")).alias("license_id"),
        ids.subject_expr("_h").alias("holder_id"),
        "license_type", "issued_on",
        pl.when(pl.col("_e") >= 0).then(pl.col("_e").cast(pl.Int32).cast(pl.Date)).alias("expires_on"),
    )


@dataclass
class _Plan:
    builder: bh.EpisodeBuilder
    activity: np.ndarray  # per subject: weight of its share of the popularity noise
    eligibility: "_Eligibility"
    report_filed: dict[int, np.ndarray]  # year -> enterprises that filed that year's report before as_of


def _plan_episodes(rng, cat: Catalogue, pop: Population, ent: Enterprises, lic: Licences,
                   license_types: pl.DataFrame, as_of: int) -> _Plan:
    n, m = pop.n, ent.n
    ws = as_of - WINDOW_DAYS
    district = np.concatenate([pop.district, ent.district])
    eb = bh.EpisodeBuilder(rng, cat, district, pop.age, pop.local, pop.birth, n)
    # Life events of persons.
    for code, (k, spread) in _LIFE.items():
        sel = pop.ev_code == LIFE_EVENTS.index(code)
        eb.add_tagged(pop.ev_person[sel], f"life_event.{code}", pop.ev_day[sel], "life", k, True, spread)
    # Licence renewals in the window, lapses, and licences expiring soon after as_of.
    preferred = dict(zip(license_types["license_type"], license_types["renewal_item_id"]))
    person_type = dict(zip(license_types["license_type"], license_types["holder"] == "person"))
    for t_idx, code in enumerate(lic.types):
        sel = lic.ren_type == t_idx
        eb.add_renewals(lic.ren_holder[sel], code, preferred.get(code), lic.ren_day[sel], lic.ren_lapsed[sel],
                        person_type[code])
        soon = (lic.type_idx == t_idx) & (lic.expires >= as_of) & (lic.expires < as_of + 60)
        u = rng.random(len(soon))
        looking = soon & (u < 0.35)
        applied = soon & (u >= 0.35) & (u < 0.5) & (lic.expires < as_of + 30)
        for who, day, lapsed in (
            (lic.holder[looking], np.full(looking.sum(), as_of - 1), True),
            (lic.holder[applied], as_of + rng.integers(1, 12, applied.sum()), False),
        ):
            eb.add_renewals(who, code, preferred.get(code), day, np.full(len(who), lapsed), person_type[code])
    # Occupations drive browsing of their items (students from 16: younger ones do not use the portal).
    for o_idx, occ in enumerate(OCCUPATIONS):
        sel = np.nonzero((pop.occupation == o_idx) & (pop.age >= 16))[0]
        eb.add_interest(sel, f"occupation.{occ}", 3.0, ws, as_of, True)
    cr = crowds(pop)
    parents = cr["parent_young_child"] & (pop.age <= 50)
    for crowd, (keys, rate) in _CROWD_INTEREST.items():
        members = parents if crowd == "parent_young_child" else cr[crowd] & (pop.age >= 16)
        for key in keys:
            eb.add_interest(np.nonzero(members)[0], key, rate / len(keys), ws, as_of, True)
    # Enterprises: setting up, annual reports, industry, size, food and technology needs.
    e_idx = n + np.arange(m)
    new = ent.founded >= ws
    eb.add_tagged(e_idx[new], "enterprise.new_business", ent.founded[new], "life", 5, False, (-20, 60))
    letters = np.array(INDUSTRIES)[ent.industry] if m else np.zeros(0, str)
    for letter in INDUSTRIES:
        eb.add_interest(e_idx[letters == letter], f"industry.{letter}", 3.0, ws, as_of, False)
    bands = size_band(ent.employees) if m else np.zeros(0, str)
    for band in ("micro", "small", "medium", "large"):
        eb.add_interest(e_idx[bands == band], f"enterprise.size_{band}", 1.0, ws, as_of, False)
    eb.add_interest(e_idx[ent.food], "enterprise.food_catering", 3.0, ws, as_of, False)
    eb.add_interest(e_idx[ent.high_tech_candidate], "enterprise.high_tech_candidate", 3.0, ws, as_of, False)
    # Annual reports: filed between 1 January and 30 June, mostly late in the period.
    report_filed: dict[int, np.ndarray] = {}
    y_first, y_last = int(ymd(np.array([ws]))[0][0]), int(ymd(np.array([as_of - 1]))[0][0])
    for y in range(y_first, y_last + 1):
        jan1 = day_number(date(y, 1, 1))
        files = (ent.founded < jan1) & (rng.random(m) < 0.93)
        day = jan1 + (rng.beta(3.0, 1.5, m) * 180).astype(np.int64)
        report_filed[y] = files & (day < as_of)
        sel = files & (day >= ws) & (day < as_of)
        eb.add_one(e_idx[sel], "enterprise.annual_report_due", day[sel], "filing", False)
    # Routine transactions, in proportion to how active each subject is.
    act = _activity(rng, pop, ent)
    elig = _Eligibility(cat, pop, ent)
    eb.add_routine(np.arange(n + m), np.minimum(act * 1.0, 8.0), ws, as_of, elig)
    return _Plan(eb, act, elig, report_filed)


def _annual_report_due(report_filed: dict[int, np.ndarray], ent: Enterprises, as_of: int) -> np.ndarray:
    """Enterprises that still owe this year's annual report on as_of (1 January - 30 June only)."""
    y, mth, _ = ymd(np.array([as_of]))
    y, mth = int(y[0]), int(mth[0])
    if mth > 6:
        return np.zeros(ent.n, bool)
    filed = report_filed.get(y, np.zeros(ent.n, bool))
    return (ent.founded < day_number(date(y, 1, 1))) & ~filed


def _activity(rng, pop: Population, ent: Enterprises) -> np.ndarray:
    """How much each subject uses the portal (0 = never on their own initiative)."""
    age = pop.age
    factor = np.select([age < 14, age < 18, age < 30, age < 60, age < 75], [0.0, 0.3, 1.1, 1.0, 0.6], 0.25)
    inactive = rng.random(pop.n) < 0.3
    people = np.where(inactive, 0.0, rng.lognormal(0, 0.9, pop.n) * factor)
    firms = rng.lognormal(0, 0.9, ent.n) * (0.8 + 0.25 * np.log1p(ent.employees))
    return np.concatenate([people, firms])


class _Eligibility:
    """Draws items by popularity among those a subject may use: audience, age range, hukou, industry,
    and the city-wide or own-district variant of a service."""

    def __init__(self, cat: Catalogue, pop: Population, ent: Enterprises):
        self.cat = cat
        bounds = np.concatenate([cat.min_age[np.isfinite(cat.min_age)], cat.max_age[np.isfinite(cat.max_age)] + 1])
        self.cuts = np.unique(bounds)
        n_d = len(DISTRICT_NAMES)
        self.offset, self.n_d, self.pop = (len(self.cuts) + 1) * 2 * n_d, n_d, pop
        self.enterprise_key = self.offset + ent.district.astype(np.int64) * len(INDUSTRIES) + ent.industry
        self.cache: dict[tuple[int, bool], tuple[np.ndarray, np.ndarray]] = {}

    def _items(self, key: int, repeatable_only: bool):
        hit = self.cache.get((key, repeatable_only))
        if hit is not None:
            return hit
        c = self.cat
        if key >= self.offset:
            d, letter = divmod(key - self.offset, len(INDUSTRIES))
            ok = ~c.person & c.industry_ok[:, letter]
        else:
            d = key % self.n_d
            bucket, local = divmod(key // self.n_d, 2)
            age = self.cuts[bucket - 1] if bucket > 0 else (self.cuts[0] - 1 if len(self.cuts) else 30)
            ok = c.person & (c.min_age <= age) & (c.max_age >= age) & (~c.hukou_only | bool(local))
        ok &= (c.district == -1) | (c.district == d)
        if repeatable_only:
            ok &= ~c.once & c.general
        idx = np.nonzero(ok)[0]
        cdf = np.cumsum(c.popularity[idx])
        self.cache[(key, repeatable_only)] = (idx, cdf)
        return idx, cdf

    def keys(self, subjects: np.ndarray, day: np.ndarray) -> np.ndarray:
        """Eligibility group of each subject on ``day``: age bucket, hukou and district (persons) or
        district (enterprises)."""
        pop, n = self.pop, self.pop.n
        person = subjects < n
        s = np.minimum(subjects, max(n - 1, 0))
        keys = np.empty(len(subjects), np.int64)
        if n:
            bucket = np.searchsorted(self.cuts, age_years(pop.birth[s[person]], day[person]), side="right")
            keys[person] = (bucket * 2 + pop.local[s[person]]) * self.n_d + pop.district[s[person]]
        keys[~person] = self.enterprise_key[subjects[~person] - n]
        return keys

    def __call__(self, subjects: np.ndarray, rng: np.random.Generator, repeatable_only: bool,
                 day: np.ndarray) -> np.ndarray:
        """One item per subject (-1 when none is eligible) drawn by popularity, eligibility judged on ``day``."""
        out = np.full(len(subjects), -1, np.int64)
        keys = self.keys(subjects, day)
        order = np.argsort(keys, kind="stable")
        sk = keys[order]
        starts = np.flatnonzero(np.r_[True, sk[1:] != sk[:-1]]) if len(sk) else np.zeros(0, np.int64)
        ends = np.r_[starts[1:], len(sk)]
        u = rng.random(len(subjects))
        for s, e in zip(starts, ends):
            idx, cdf = self._items(int(sk[s]), repeatable_only)
            if len(idx) == 0:
                continue
            rows = order[s:e]
            out[rows] = idx[np.minimum(np.searchsorted(cdf, u[rows] * cdf[-1], side="right"), len(idx) - 1)]
        return out


def _channels(rng, subject: np.ndarray, action: np.ndarray, ts: np.ndarray, pop: Population) -> np.ndarray:
    """web/app/window/kiosk: the elderly favour windows and kiosks, enterprises the web; windows and
    kiosks only serve in office hours on weekdays."""
    n = len(subject)
    person = subject < pop.n
    old = np.zeros(n, bool)
    old[person] = pop.age[subject[person]] >= 65
    u = rng.random(n)
    # Cumulative probabilities of web, app, window (kiosk takes the rest).
    web = np.where(person, np.where(old, 0.12, 0.25), 0.6)
    app = web + np.where(person, np.where(old, 0.3, 0.6), 0.2)
    window = app + np.where(person, np.where(old, 0.4, 0.1), 0.18)
    window = np.where(action >= 4, np.minimum(window + 0.1, 0.98), window)  # applications at a window more often
    ch = np.select([u < web, u < app, u < window], [0, 1, 2], 3).astype(np.int8)
    day, sec = ts // DAY, ts % DAY
    open_hours = ((day + 3) % 7 < 5) & (sec >= 9 * 3600) & (sec < 17 * 3600)
    return np.where((ch >= 2) & ~open_hours, np.where(person, 1, 0), ch).astype(np.int8)


def _write_events(seed, stem: Path, fmt: str, cat: Catalogue, pop: Population, ent: Enterprises, ids: _Ids,
                  ep: bh.Episodes, mask: np.ndarray, weights: np.ndarray, elig: _Eligibility,
                  per_subject: float, as_of: int, report: Progress) -> int:
    """Events chunk by chunk of subjects: their episodes expanded plus Poisson noise topping the
    total up to ``per_subject`` events per subject on average."""
    n_subjects = pop.n + ent.n
    ws_s, end_s = bh.window_bounds(as_of)
    target = per_subject * n_subjects
    budget = max(0.0, target - int(mask.sum()))
    lam = budget * weights / weights.sum() if weights.sum() > 0 else np.zeros(n_subjects)
    bounds = np.searchsorted(ep.subject, np.arange(0, n_subjects + CHUNK_SUBJECTS, CHUNK_SUBJECTS))
    n_chunks = math.ceil(n_subjects / CHUNK_SUBJECTS)
    path = stem.with_suffix(f".{fmt}")
    item_names = pl.Series(cat.item_ids.tolist(), dtype=pl.String)
    action_names, channel_names = pl.Series(ACTIONS), pl.Series(CHANNELS)
    written = 0
    writer = None
    fh = open(path, "wb") if fmt == "csv" else None
    try:
        for c in range(n_chunks):
            rng = _rng(seed, 10, c)
            lo, hi = c * CHUNK_SUBJECTS, min((c + 1) * CHUNK_SUBJECTS, n_subjects)
            a, b = bounds[c], bounds[c + 1]
            part = bh.Episodes(ep.subject[a:b], ep.item[a:b], ep.anchor[a:b], ep.funnel[a:b], ep.complete_at[a:b])
            s1, i1, a1, t1 = bh.expand(rng, part, mask[a:b], ws_s, end_s)
            subjects = np.arange(lo, hi)
            s2, i2, a2, t2 = bh.noise(rng, subjects, rng.poisson(lam[lo:hi]), elig, ws_s, end_s)
            subject = np.concatenate([s1, s2])
            item = np.concatenate([i1, i2])
            action = np.concatenate([a1, a2]).astype(np.int64)
            ts = np.concatenate([t1, t2])
            # In time order; the same action on the same item in the same second is one event.
            detail = (subject << 20) | (item << 3) | action
            order = np.lexsort((detail, ts))
            ts, detail = ts[order], detail[order]
            fresh = np.r_[True, (ts[1:] != ts[:-1]) | (detail[1:] != detail[:-1])]
            ts, detail = ts[fresh], detail[fresh]
            subject, item, action = detail >> 20, (detail >> 3) & 0x1FFFF, detail & 7
            channel = _channels(rng, subject, action, ts, pop)
            has_id = rng.random(len(subject)) < 0.95
            chunk_ids = pl.DataFrame({"i": np.arange(lo, hi)}).select(ids.subject_expr("i")).to_series()
            df = pl.DataFrame({
                "subject_id": chunk_ids.gather(subject - lo), "item_id": item_names.gather(item),
                "action": action_names.gather(action), "ts": ts, "h": has_id,
                "channel": channel_names.gather(channel.astype(np.int64)),
            })
            # Zero-padded sequence numbers: offset by 10^10 and drop the leading 1 (cheaper than zfill).
            seq = pl.int_range(written + 1 + 10**10, written + 1 + 10**10 + df.height, eager=False)
            stamp = pl.from_epoch(pl.col("ts"), time_unit="s")
            df = df.select(
                "subject_id",
                "item_id",
                "action",
                stamp.dt.strftime("%Y-%m-%dT%H:%M:%S") if fmt == "csv" else stamp,
                pl.when(pl.col("h")).then(pl.lit("EV") + seq.cast(pl.String).str.slice(1)).alias("event_id"),
                "channel",
            )
            if fmt == "csv":
                df.write_csv(fh, include_header=(c == 0))
            else:
                import pyarrow.parquet as pq

                table = df.to_arrow()
                if writer is None:
                    writer = pq.ParquetWriter(path, table.schema, compression="zstd")
                writer.write_table(table)
            written += df.height
            report("events", c + 1, n_chunks)
        if n_chunks == 0 and fmt == "csv":
            fh.write(b"subject_id,item_id,action,ts,event_id,channel\n")
    finally:
        if fh is not None:
            fh.close()
        if writer is not None:
            writer.close()
    return written


def _write_truth(truth: Path, pop: Population, ent: Enterprises, ids: _Ids, report_due: np.ndarray, as_of: int) -> int:
    life = pl.DataFrame({
        "_p": pop.ev_person,
        "code": _lookup([f"life_event.{c}" for c in LIFE_EVENTS], pop.ev_code),
        "date": _days(pop.ev_day),
    }).select(ids.subject_expr("_p").alias("subject_id"), "code", "date", "_p").unique(
        subset=["subject_id", "code", "date"]).sort(["_p", "date", "code"]).drop("_p")
    life.write_csv(truth / "life_events.csv", date_format="%Y-%m-%d")
    crowd_sets = crowds(pop)
    crowd_codes = [f"crowd.{c}" for c in crowd_sets]
    _pairs([np.nonzero(m)[0] for m in crowd_sets.values()], crowd_codes, ids, "subject_id", "code").write_csv(
        truth / "crowds.csv")
    occ = pop.occupation >= 0
    _pairs([np.nonzero(occ & (pop.occupation == k))[0] for k in range(len(OCCUPATIONS))], list(OCCUPATIONS), ids,
           "person_id", "occupation").write_csv(truth / "occupations.csv")
    idx = pop.n + np.arange(ent.n)
    traits = {
        "new_business": ent.founded >= as_of - 365,
        "high_tech_candidate": ent.high_tech_candidate,
        "food_catering": ent.food,
        "annual_report_due": report_due,
    }
    bands = size_band(ent.employees) if ent.n else np.zeros(0, str)
    for band in ("micro", "small", "medium", "large"):
        traits[f"size_{band}"] = bands == band
    for k, letter in enumerate(INDUSTRIES):
        traits[f"industry_{letter}"] = ent.industry == k
    _pairs([idx[sel] for sel in traits.values()], [f"enterprise.{c}" for c in traits], ids, "enterprise_id",
           "code").write_csv(truth / "enterprise_traits.csv")
    (truth / "README.md").write_text(TRUTH_README, encoding="utf-8")
    return life.height


def _pairs(groups: list[np.ndarray], codes: list[str], ids: _Ids, id_col: str, code_col: str) -> pl.DataFrame:
    """(subject, code) rows: the subjects of ``groups[k]`` carry ``codes[k]``; sorted by subject, code."""
    s = np.concatenate(groups) if groups else np.zeros(0, np.int64)
    k = np.repeat(np.arange(len(codes)), [len(g) for g in groups])
    return (
        pl.DataFrame({"_s": s.astype(np.int64), code_col: _lookup(codes, k)})
        .sort(["_s", code_col])
        .select(ids.subject_expr("_s").alias(id_col), code_col)
    )

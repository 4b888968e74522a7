"""People and households of the synthetic city, with their life events in the two years before as_of.

Households are drawn first (singles, couples, families, three generations, ...) and their members' ages
follow from the household's shape (children 24-36 years younger than their mother, grandparents 25-33
years older than the father), which yields a Shanghai-like aging pyramid. Registry fields (what the
population registry would hold) and latent facts (true occupation, job seeking, home-purchase intent,
bereavement) are kept apart; only the former reach the export.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from data.synth.common import (
    CENTRAL,
    DISTRICT_WEIGHTS,
    LIFE_EVENTS,
    OCCUPATIONS,
    WINDOW_DAYS,
    YEAR,
    age_years,
    birthday_at_age,
    days_of,
    pick,
    pick_rows,
    uniform_days,
    ymd,
)

# Household shapes and their share of households (Shanghai: ~2.3-2.5 people per household).
HOUSEHOLD_TYPES = (
    ("single_young", 0.16),
    ("single_middle", 0.04),
    ("single_elderly", 0.10),
    ("couple_young", 0.08),
    ("couple_middle", 0.10),
    ("couple_elderly", 0.14),
    ("family", 0.27),
    ("three_gen", 0.08),
    ("single_parent", 0.03),
)
_T = {name: i for i, (name, _) in enumerate(HOUSEHOLD_TYPES)}
# Share of households without local hukou, by type: young migrants dominate the non-local population.
_NON_LOCAL = np.array([0.80, 0.45, 0.07, 0.66, 0.38, 0.07, 0.52, 0.15, 0.40])
# Share of households on the minimum-living guarantee (低保), by type.
_LOW_INCOME = np.array([0.008, 0.05, 0.06, 0.006, 0.015, 0.025, 0.008, 0.012, 0.09])

# Member slots of a household, in export order.
HEAD, SPOUSE, CHILD1, CHILD2, ELDER1, ELDER2 = range(6)
MARITAL = ("single", "married", "divorced", "widowed")
SINGLE, MARRIED, DIVORCED, WIDOWED = range(4)

# Occupation weights (order of OCCUPATIONS minus student) for men, women in "cadre" jobs (retire at 55)
# and women in "worker" jobs (retire at 50).
_WORK_OCCS = OCCUPATIONS[1:]
_W_MEN = np.array([4, 8, 6, 14, 15, 13, 30], dtype=float)
_W_CADRE = np.array([16, 0, 17, 0, 12, 0, 55], dtype=float)
_W_WORKER = np.array([0, 5, 0, 5, 0, 35, 55], dtype=float)
_OCC = {name: i for i, name in enumerate(OCCUPATIONS)}
EV = {name: i for i, name in enumerate(LIFE_EVENTS)}


@dataclass
class Population:
    """Column arrays, one entry per person (index = position in the export)."""

    birth: np.ndarray  # days since epoch
    male: np.ndarray
    district: np.ndarray  # index into DISTRICTS
    local: np.ndarray
    household: np.ndarray  # household index
    slot: np.ndarray  # HEAD .. ELDER2
    marital: np.ndarray  # index into MARITAL
    low_income: np.ndarray
    disability: np.ndarray
    occupation: np.ndarray  # index into OCCUPATIONS, -1 = none (truth)
    occupation_known: np.ndarray  # the registry holds the occupation
    retire_age: np.ndarray
    age: np.ndarray  # completed years on as_of
    hh_head: np.ndarray  # per household: person index of the head
    hh_spouse: np.ndarray  # per household: person index of the spouse, -1 if none
    # Life events: person index, index into LIFE_EVENTS, day.
    ev_person: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    ev_code: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    ev_day: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    # Marriages (both spouses get a certificate on that day): person index, day.
    marriage_person: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    marriage_day: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    # Home purchases in the window: acting person, intent day, completion day (-1 = not completed).
    purchase_person: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    purchase_day: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    purchase_done: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def n(self) -> int:
        return len(self.birth)


def _households(rng: np.random.Generator, h: int, as_of: int):
    """(types, present (h,6), age_days (h,6), male (h,6)) for ``h`` households."""
    types = pick(rng, h, np.array([w for _, w in HOUSEHOLD_TYPES]))
    present = np.zeros((h, 6), bool)
    age = np.zeros((h, 6))  # years, fractional
    male = np.zeros((h, 6), bool)
    t = types
    u = lambda lo, hi: rng.uniform(lo, hi, h)  # noqa: E731
    gap = np.clip(rng.normal(2.0, 2.5, h), -3, 10)  # husband older than wife by this much

    present[:, HEAD] = True
    # Singles.
    is_sy, is_sm, is_se = t == _T["single_young"], t == _T["single_middle"], t == _T["single_elderly"]
    age[:, HEAD] = np.select(
        [is_sy, is_sm, is_se], [u(18, 40), u(40, 60), 60 + np.minimum(rng.exponential(11, h), 40)], 0
    )
    male[:, HEAD] = np.where(is_se, rng.random(h) < 0.32, rng.random(h) < 0.55)
    # Couples without children at home.
    couple_head = np.select(
        [t == _T["couple_young"], t == _T["couple_middle"], t == _T["couple_elderly"]],
        [u(22, 40), u(45, 65), 62 + np.minimum(rng.exponential(9, h), 38)],
        np.nan,
    )
    is_couple = ~np.isnan(couple_head)
    age[is_couple, HEAD] = couple_head[is_couple]
    age[is_couple, SPOUSE] = np.maximum(couple_head[is_couple] - gap[is_couple], 20)
    present[is_couple, SPOUSE] = True
    male[is_couple, HEAD] = True
    # Families: children's ages first, parents follow.
    is_fam, is_3g, is_sp = t == _T["family"], t == _T["three_gen"], t == _T["single_parent"]
    has_kids = is_fam | is_3g | is_sp
    eldest = np.select([is_fam, is_3g, is_sp], [u(0.3, 30), u(1.5, 18), u(2, 20)], 0.0)
    second = has_kids & (eldest > 2.5) & (rng.random(h) < np.where(is_3g, 0.3, 0.22))
    age[:, CHILD1] = eldest
    age[:, CHILD2] = np.where(second, eldest - rng.uniform(2, np.maximum(np.minimum(eldest, 12), 2.01)), 0)
    present[:, CHILD1] = has_kids
    present[:, CHILD2] = second
    male[:, CHILD1] = rng.random(h) < 0.51
    male[:, CHILD2] = rng.random(h) < 0.51
    mother = eldest + u(24, 36)
    father = mother + gap
    fam_or_3g = is_fam | is_3g
    age[fam_or_3g, HEAD] = father[fam_or_3g]
    age[fam_or_3g, SPOUSE] = mother[fam_or_3g]
    male[fam_or_3g, HEAD] = True
    present[fam_or_3g, SPOUSE] = True
    sp_mother = rng.random(h) < 0.8
    age[is_sp, HEAD] = np.where(sp_mother, mother, father)[is_sp]
    male[is_sp, HEAD] = ~sp_mother[is_sp]
    # Grandparents living with the family (the father's parents).
    elder_kind = pick(rng, h, np.array([0.5, 0.35, 0.15]))  # both, grandmother only, grandfather only
    present[:, ELDER1] = is_3g & (elder_kind != 1)
    present[:, ELDER2] = is_3g & (elder_kind != 2)
    grandfather = father + u(25, 33)
    age[:, ELDER1] = grandfather
    age[:, ELDER2] = grandfather - np.clip(rng.normal(2, 2, h), -3, 8)
    male[:, ELDER1] = True
    age = np.clip(age, 0, 104)
    age_days = (age * YEAR).astype(np.int64)
    return types, present, age_days, male


def build_population(rng: np.random.Generator, n: int, as_of: int) -> Population:
    """``n`` people in households, their registry fields, latent facts and life events."""
    h = int(n / 2.2) + 64
    while True:
        types, present, age_days, male = _households(rng, h, as_of)
        if present.sum() >= n:
            break
        h *= 2
    # People in household order; the last household may be cut short (its head always comes first).
    hh_idx, slot = np.nonzero(present)
    hh_idx, slot = hh_idx[:n], slot[:n]
    n_hh = int(hh_idx[-1]) + 1
    types, present, age_days, male = types[:n_hh], present[:n_hh], age_days[:n_hh], male[:n_hh]
    present_cut = np.zeros_like(present)
    present_cut[hh_idx, slot] = True
    present = present_cut

    ptype = types[hh_idx]
    birth = as_of - 1 - age_days[hh_idx, slot]
    pmale = male[hh_idx, slot]
    age = age_years(birth, as_of)

    non_local_hh = rng.random(n_hh) < _NON_LOCAL[types]
    local = ~non_local_hh[hh_idx]
    # Migrants live mostly in the outer districts.
    w_local = DISTRICT_WEIGHTS
    w_migrant = DISTRICT_WEIGHTS * np.where(CENTRAL, 0.55, 1.25)
    hh_district = np.where(non_local_hh, pick(rng, n_hh, w_migrant), pick(rng, n_hh, w_local))
    district = hh_district[hh_idx]

    # Index of each household's head and spouse.
    pos = np.full((n_hh, 6), -1, np.int64)
    pos[hh_idx, slot] = np.arange(n)
    hh_head, hh_spouse = pos[:, HEAD], pos[:, SPOUSE]

    low_income = (rng.random(n_hh) < _LOW_INCOME[types])[hh_idx]
    disability = rng.random(n) < 0.016 + 0.05 * (age >= 60) + 0.06 * (age >= 80)

    # Marital status from the household shape.
    r = rng.random(n)
    marital = np.full(n, SINGLE)
    couple_slot = (slot == HEAD) | (slot == SPOUSE)
    has_spouse = present[hh_idx, SPOUSE]
    marital[couple_slot & has_spouse] = MARRIED
    lone_head = (slot == HEAD) & ~has_spouse
    sy, sm, se, sp = (ptype == _T[k] for k in ("single_young", "single_middle", "single_elderly", "single_parent"))
    marital[lone_head & sy & (r < 0.08)] = DIVORCED
    marital[lone_head & sm] = np.select([r < 0.25, r < 0.7, r < 0.85], [SINGLE, DIVORCED, WIDOWED], MARRIED)[lone_head & sm]
    marital[lone_head & se] = np.select([r < 0.05, r < 0.15, r < 0.9], [SINGLE, DIVORCED, WIDOWED], MARRIED)[lone_head & se]
    marital[lone_head & sp] = np.select([r < 0.15, r < 0.85], [SINGLE, DIVORCED], WIDOWED)[lone_head & sp]
    elder = (slot == ELDER1) | (slot == ELDER2)
    both_elders = present[hh_idx, ELDER1] & present[hh_idx, ELDER2]
    marital[elder & both_elders] = MARRIED
    marital[elder & ~both_elders] = np.where(r < 0.85, WIDOWED, DIVORCED)[elder & ~both_elders]

    # Careers: women in "cadre" jobs retire at 55, in "worker" jobs at 50, men at 60.
    cadre = rng.random(n) < 0.5
    retire_age = np.where(pmale, 60, np.where(cadre, 55, 50))
    occupation = np.full(n, -1, np.int64)
    occupation[(age >= 6) & (age <= 17)] = _OCC["student"]
    young_adult = (age >= 18) & (age <= 22)
    occupation[young_adult & (rng.random(n) < 0.7)] = _OCC["student"]
    working = (age >= 18) & (age < retire_age) & (occupation == -1) & (rng.random(n) >= 0.09)
    wk = np.nonzero(working)[0]
    weights = np.where(pmale[wk, None], _W_MEN, np.where(cadre[wk, None], _W_CADRE, _W_WORKER))
    weights = weights.copy()
    weights[:, _WORK_OCCS.index("it_professional")] *= np.where(age[wk] < 40, 1.8, np.where(age[wk] >= 50, 0.4, 1.0))
    weights[:, _WORK_OCCS.index("security_guard")] *= np.where(age[wk] >= 45, 2.0, 1.0)
    weights[:, _WORK_OCCS.index("driver")] *= np.where(local[wk], 0.7, 1.4)
    occupation[wk] = 1 + pick_rows(rng, weights)
    # Some men past retirement keep working as security guards.
    late = pmale & (age >= 60) & (age < 68) & (rng.random(n) < 0.06)
    occupation[late] = _OCC["security_guard"]

    window_start = as_of - WINDOW_DAYS
    ev_p, ev_c, ev_d = [], [], []

    def add(person, code, day):
        ev_p.append(np.asarray(person, np.int64))
        ev_c.append(np.full(len(ev_p[-1]), EV[code], np.int64))
        ev_d.append(np.asarray(day, np.int64))

    # Graduation (July 1) for part of the 21-25 year-olds; most look for a job around it.
    grad_age = (age >= 21) & (age <= 25) & (occupation != _OCC["student"])
    graduate = grad_age & (rng.random(n) < 0.45)
    y_last = ymd(np.array([as_of - 1]))[0][0]
    last_july = days_of(np.array([y_last]), np.array([7]), np.array([1]))[0]
    if last_july >= as_of:
        last_july = days_of(np.array([y_last - 1]), np.array([7]), np.array([1]))[0]
    prev_july = days_of(np.array([ymd(np.array([last_july]))[0][0] - 1]), np.array([7]), np.array([1]))[0]
    grad_day = np.where(age <= 23, last_july, prev_july)
    graduate &= grad_day >= window_start
    g = np.nonzero(graduate)[0]
    add(g, "graduation", grad_day[g])
    # Recent graduates still looking for work have no occupation yet.
    still_seeking = graduate & (as_of - grad_day < 200) & (rng.random(n) < 0.4)
    occupation[still_seeking] = -1
    seeker = graduate & ((rng.random(n) < 0.85) | still_seeking)
    s = np.nonzero(seeker)[0]
    add(s, "job_seeking", np.clip(grad_day[s] + rng.integers(-150, 60, len(s)), window_start, as_of - 1))
    # Job changers and the unemployed.
    changer = (age >= 25) & (age < 55) & ~graduate & (rng.random(n) < 0.02)
    c = np.nonzero(changer)[0]
    add(c, "job_seeking", uniform_days(rng, window_start, as_of, len(c)))

    # The registry knows about a quarter of occupations (public-sector jobs more often).
    known_p = np.where(np.isin(occupation, [_OCC["teacher"], _OCC["medical_worker"]]), 0.42, 0.22)
    occupation_known = (occupation >= 0) & (rng.random(n) < known_p)

    # Births and second children: parents are the household's head and spouse.
    child = (slot == CHILD1) | (slot == CHILD2)
    newborn = child & (birth >= window_start)
    nb = np.nonzero(newborn)[0]
    for parent in (hh_head, hh_spouse):
        par = parent[hh_idx[nb]]
        ok = par >= 0
        add(par[ok], "birth", birth[nb][ok])
        second_birth = (slot[nb] == CHILD2) & ok
        add(par[second_birth], "second_child", birth[nb][second_birth])

    # School entry: a child who is 3, 6 or 12 by 1 September starts kindergarten, primary or junior
    # secondary school that day.
    yrs = np.arange(ymd(np.array([window_start]))[0][0], y_last + 1)
    for y, entry_age in ((y, a) for y in yrs for a in (3, 6, 12)):
        sept1 = days_of(np.array([y]), np.array([9]), np.array([1]))[0]
        if not (window_start <= sept1 < as_of):
            continue
        entrant = child & (birthday_at_age(birth, entry_age) <= sept1) & (birthday_at_age(birth, entry_age + 1) > sept1)
        kids = np.nonzero(entrant)[0]
        for parent in (hh_head, hh_spouse):
            par = parent[hh_idx[kids]]
            add(par[par >= 0], "school_entry", np.full((par >= 0).sum(), sept1))

    # Retirement on the birthday that reaches the retirement age.
    retire_day = birthday_at_age(birth, retire_age)
    retiree = (retire_day >= window_start) & (retire_day < as_of)
    rt = np.nonzero(retiree)[0]
    add(rt, "retirement", retire_day[rt])
    occupation[retiree & (occupation != _OCC["security_guard"])] = -1
    occupation_known &= occupation >= 0

    # Marriages: young couples and new parents married in the window; older couples long ago.
    wife_birth = np.where(hh_spouse >= 0, birth[np.maximum(hh_spouse, 0)], 0)
    earliest = birthday_at_age(wife_birth, 21)
    t_hh = types
    eldest_birth = np.where(present[:, CHILD1], birth[np.maximum(pos[:, CHILD1], 0)], as_of)
    recent = (t_hh == _T["couple_young"]) & (rng.random(n_hh) < 0.25)
    before_child = (
        ((t_hh == _T["family"]) | (t_hh == _T["three_gen"]))
        & (eldest_birth - window_start > 120)
        & (rng.random(n_hh) < 0.35)
    )
    m_day = uniform_days(rng, earliest, eldest_birth - rng.integers(200, 1500, n_hh))
    m_day = np.where(
        (t_hh == _T["couple_young"]) | (t_hh == _T["couple_elderly"]) | (t_hh == _T["couple_middle"]),
        uniform_days(rng, earliest, np.minimum(earliest + int(12 * YEAR), window_start)),
        m_day,
    )
    m_day = np.where(recent, uniform_days(rng, window_start, as_of, n_hh), m_day)
    m_day = np.where(before_child, uniform_days(rng, window_start, eldest_birth - 60), m_day)
    m_day = np.clip(np.maximum(m_day, earliest), None, as_of - 1)
    couple = hh_spouse >= 0
    mar_p = np.concatenate([hh_head[couple], hh_spouse[couple]])
    mar_d = np.concatenate([m_day[couple], m_day[couple]])
    in_window = mar_d >= window_start
    add(mar_p[in_window], "marriage", mar_d[in_window])

    # Bereavement: lone elderly widowed in the window, the family of a widowed grandparent, and
    # adults losing a parent who lived elsewhere (behaviour only).
    r2 = rng.random(n)
    lone_widow = (marital == WIDOWED) & ((slot == HEAD) & se | elder) & (r2 < 0.15)
    bday = uniform_days(rng, window_start, as_of, n)
    lw = np.nonzero(lone_widow)[0]
    add(lw, "bereavement", bday[lw])
    grand = lw[slot[lw] != HEAD]
    son = hh_head[hh_idx[grand]]
    add(son, "bereavement", bday[grand])
    other = (age >= 35) & (age <= 75) & ~lone_widow & (r2 > 0.99)
    o = np.nonzero(other)[0]
    add(o, "bereavement", bday[o])

    # Home purchase: intent shown by behaviour; about half complete with a property certificate.
    head_age = age[hh_head]
    buyer_hh = (head_age >= 25) & (head_age <= 55) & (
        rng.random(n_hh) < np.where(recent, 0.3, 0.06) * np.where(non_local_hh, 0.5, 1.0)
    )
    p_day = np.where(
        recent,
        np.clip(m_day + rng.integers(-180, 365, n_hh), window_start + 30, as_of - 1),
        uniform_days(rng, window_start + 30, as_of, n_hh),
    )
    done_day = p_day + rng.integers(20, 75, n_hh)
    done = (rng.random(n_hh) < 0.55) & (done_day < as_of)
    b = np.nonzero(buyer_hh)[0]
    add(hh_head[b], "home_purchase", p_day[b])

    return Population(
        birth=birth,
        male=pmale,
        district=district,
        local=local,
        household=hh_idx,
        slot=slot,
        marital=marital,
        low_income=low_income,
        disability=disability,
        occupation=occupation,
        occupation_known=occupation_known,
        retire_age=retire_age,
        age=age,
        hh_head=hh_head,
        hh_spouse=hh_spouse,
        ev_person=np.concatenate(ev_p),
        ev_code=np.concatenate(ev_c),
        ev_day=np.concatenate(ev_d),
        marriage_person=mar_p,
        marriage_day=mar_d,
        purchase_person=hh_head[b],
        purchase_day=p_day[b],
        purchase_done=np.where(done[b], done_day[b], -1),
    )


def crowds(pop: Population) -> dict[str, np.ndarray]:
    """Crowd membership on as_of (boolean per person), all derivable from the registries."""
    young_child_hh = np.zeros(int(pop.household.max()) + 1 if pop.n else 0, bool)
    young_child_hh[pop.household[pop.age < 6]] = True
    return {
        "child": pop.age < 14,
        "elderly": pop.age >= 60,
        "hardship": pop.low_income.copy(),
        "disabled": pop.disability.copy(),
        "parent_young_child": young_child_hh[pop.household] & (pop.age >= 18),
        "non_local": ~pop.local,
    }

"""E-licences of the synthetic city, with renewal histories over the two years before as_of.

Who holds which licence type is a rule per known type code (unknown codes in data/license_types.csv are
skipped and reported); validity comes from the licence-type file. A licence with a validity is a chain:
the one in force on as_of was issued up to one validity period ago, so expiries spread evenly over the
next period (a realistic share expires within 30/90 days); when that issue date falls in the window the
predecessor expired in the window and was renewed up to 60 days early, which gives a renewal episode
and two licences in the export. A share of holders let the licence lapse instead (no successor).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from data.synth.common import INDUSTRIES, WINDOW_DAYS, YEAR, birthday_at_age, uniform_days
from data.synth.enterprises import Enterprises
from data.synth.population import HEAD, Population

_OCC = {
    "student": 0, "teacher": 1, "security_guard": 2, "medical_worker": 3, "driver": 4,
    "it_professional": 5, "self_employed": 6, "office_worker": 7,
}


@dataclass
class Holding:
    """Who holds one licence type: holder subject index, earliest possible issue day, optional fixed
    issue day (event-driven licences), validity in days per holder (0 = never expires), lapse share."""

    holder: np.ndarray
    earliest: np.ndarray
    validity: np.ndarray
    lapse: float = 0.1
    issued: np.ndarray | None = None


@dataclass
class Licences:
    types: list[str]
    holder: np.ndarray
    type_idx: np.ndarray
    issued: np.ndarray
    expires: np.ndarray  # -1 = no expiry
    # Renewals (or lapses) whose old licence expired in the window: holder, type, day, lapsed.
    ren_holder: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    ren_type: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    ren_day: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # new issue day, or old expiry if lapsed
    ren_lapsed: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    skipped: list[str] = field(default_factory=list)


def _years(v: float | None) -> int:
    return 0 if v is None else int(round(v * YEAR))


def _person_holdings(rng, pop: Population, as_of: int, validity: dict[str, int]) -> dict[str, Holding]:
    n = pop.n
    age, occ, local = pop.age, pop.occupation, pop.local
    r = lambda: rng.random(n)  # noqa: E731
    at = lambda years: birthday_at_age(pop.birth, years)  # noqa: E731
    out: dict[str, Holding] = {}

    def hold(code, mask, earliest, lapse=0.1, valid=None, issued=None):
        idx = np.nonzero(mask)[0]
        v = np.full(len(idx), validity.get(code, 0), np.int64) if valid is None else np.asarray(valid)[idx]
        out[code] = Holding(idx, np.asarray(earliest)[idx], v, lapse, None if issued is None else np.asarray(issued)[idx])

    # Resident ID card: compulsory from 16; validity 5/10/20 years by age, long-term from 46 (GB law).
    id_valid = np.select([age < 16, age < 26, age < 46], [5, 10, 20], 0) * YEAR
    hold("resident_id_card", (age >= 16) | (r() < 0.3), np.where(age >= 16, at(16), pop.birth + 30), 0.03,
         id_valid.astype(np.int64))
    hold("household_register", local & (pop.slot == HEAD) & (age >= 18), at(18))
    hold("residence_permit", ~local & (age >= 16) & (r() < 0.85), np.maximum(at(16), as_of - int(8 * YEAR)), 0.08)
    hk_valid = np.where(age < 16, int(5 * YEAR), validity.get("hk_macau_permit", int(10 * YEAR)))
    hold("hk_macau_permit", ((age >= 16) & (r() < np.where(local, 0.34, 0.22))) | ((age >= 6) & (age < 16) & (r() < 0.12)),
         at(6), 0.15, hk_valid)
    hold("taiwan_permit", (age >= 18) & (r() < 0.04), at(18), 0.35)
    hold("passport", (age >= 18) & (age <= 75) & (r() < 0.25), at(18), 0.2)
    driver = occ == _OCC["driver"]
    drives = ((age >= 18) & (age <= 75) & (r() < np.where(pop.male, 0.55, 0.35))) | driver
    hold("driving_licence", drives, at(18), 0.04)
    hold("vehicle_licence", drives & (r() < 0.35), at(18))
    hold("social_security_card", r() < 0.45, pop.birth + 30, 0.05)
    hold("senior_card", (age >= 60) & (r() < 0.6), at(60) + rng.integers(5, 200, n))
    hold("disability_certificate", pop.disability & (r() < 0.95), pop.birth + 30, 0.05)
    hold("teacher_qualification", (occ == _OCC["teacher"]) & (r() < 0.9), at(22))
    hold("security_guard_certificate", (occ == _OCC["security_guard"]) & (r() < 0.85), at(18))
    med = occ == _OCC["medical_worker"]
    physician = med & (r() < 0.45)
    hold("physician_licence", physician, at(24))
    hold("nurse_licence", med & ~physician & (r() < 0.8), at(20), 0.05)
    hold("ride_hailing_driver_permit", driver & (r() < 0.4), at(21), 0.1)
    hold("road_transport_qualification", driver & (r() < 0.5), at(21), 0.05)
    # Event-driven certificates: issued on the day of the event, never expiring.
    child_cert = (pop.age < 14) & ((pop.birth >= as_of - WINDOW_DAYS) | (r() < 0.75))
    hold("birth_medical_certificate", child_cert, pop.birth, issued=pop.birth)
    mp, md = pop.marriage_person, pop.marriage_day
    out["marriage_certificate"] = Holding(mp, md, np.zeros(len(mp), np.int64), 0.0, md)
    # Property: long-standing owners (issued before the window) plus purchases completed in the window.
    heads = pop.hh_head
    h_age = age[heads]
    owner = (h_age >= 28) & (rng.random(len(heads)) < np.where(local[heads], 0.55, 0.15))
    o = heads[owner]
    window_start = as_of - WINDOW_DAYS
    old_issue = uniform_days(rng, np.maximum(at(25)[o], as_of - int(25 * YEAR)), window_start)
    done = pop.purchase_done >= 0
    out["property_certificate"] = Holding(
        np.concatenate([o, pop.purchase_person[done]]),
        np.concatenate([old_issue, pop.purchase_done[done]]),
        np.zeros(len(o) + done.sum(), np.int64),
        0.0,
        np.concatenate([old_issue, pop.purchase_done[done]]),
    )
    return out


# Enterprise licence types: (share of enterprises holding it by industry letter).
_ENTERPRISE_SHARES: dict[str, dict[str, float]] = {
    "food_production_licence": dict(C=0.12),
    "tobacco_retail_licence": dict(F=0.12, H=0.15),
    "liquor_retail_licence": dict(F=0.10, H=0.20),
    "oil_retail_licence": dict(F=0.005),
    "medical_institution_licence": dict(Q=0.7),
    "public_hygiene_licence": dict(H=0.5, R=0.3, O=0.2),
    "private_school_licence": dict(P=0.5),
    "road_transport_licence": dict(G=0.6),
    "drug_business_licence": dict(F=0.03, Q=0.2),
    "pollutant_discharge_permit": dict(C=0.4),
    "hazchem_business_licence": dict(F=0.02, C=0.05),
    "safety_production_licence": dict(B=0.8, C=0.1, E=0.3),
    "construction_qualification": dict(E=0.85),
    "telecom_value_added_licence": dict(I=0.25),
}


def _enterprise_holdings(rng, ent: Enterprises, offset: int, validity: dict[str, int]) -> dict[str, Holding]:
    m = ent.n
    letters = np.array(INDUSTRIES)[ent.industry]
    subj = offset + np.arange(m)
    out: dict[str, Holding] = {}

    def hold(code, mask, earliest, lapse=0.1, issued=None):
        idx = np.nonzero(mask)[0]
        out[code] = Holding(subj[idx], np.asarray(earliest)[idx], np.full(len(idx), validity.get(code, 0), np.int64),
                            lapse, None if issued is None else np.asarray(issued)[idx])

    hold("business_licence", np.ones(m, bool), ent.founded, 0.0, issued=ent.founded)
    hold("food_business_licence", ent.food, ent.founded, 0.08)
    certified = ent.high_tech_candidate & (rng.random(m) < 0.25)
    hold("high_tech_certificate", certified, ent.founded + 365, 0.3)
    hold("advanced_tech_service_certificate", ent.high_tech_candidate & np.isin(letters, ["I", "M"]) & (rng.random(m) < 0.06),
         ent.founded + 365, 0.3)
    for code, shares in _ENTERPRISE_SHARES.items():
        share = np.array([shares.get(c, 0.0) for c in INDUSTRIES])[ent.industry]
        hold(code, rng.random(m) < share, ent.founded)
    return out


def _chain(rng, h: Holding, as_of: int):
    """Rows (holder, issued, expires) and renewals (holder, day, lapsed) for one licence type."""
    window_start = as_of - WINDOW_DAYS
    holder, earliest, v = h.holder, np.minimum(h.earliest, as_of - 1), h.validity
    n = len(holder)
    if h.issued is not None:
        keep = h.issued < as_of
        return (holder[keep], h.issued[keep], np.where(v[keep] > 0, h.issued[keep] + v[keep], -1)), (
            np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, bool))
    expiring = v > 0
    # Licences without expiry: issued any time after the earliest day (at most 20 years back).
    issued = np.where(
        expiring,
        as_of - 1 - (rng.random(n) * np.maximum(v, 1)).astype(np.int64),
        uniform_days(rng, np.maximum(earliest, as_of - int(20 * YEAR)), as_of),
    )
    first = issued < earliest
    issued = np.where(first & expiring, uniform_days(rng, earliest, as_of), issued)
    rows_h, rows_i, rows_e = [holder], [issued], [np.where(expiring, issued + v, -1)]
    ren_h, ren_d, ren_l = [], [], []
    k, alive = issued, expiring & ~first
    current_dropped = np.zeros(n, bool)
    for step in range(8):
        renewed = alive & (k >= window_start)
        early = (rng.random(n) * np.clip(as_of - k, 1, 61)).astype(np.int64)
        prev_issue = k + early - v
        renewed &= prev_issue >= earliest
        if not renewed.any():
            break
        if step == 0:
            # The newest renewal may not have happened: the holder let the licence lapse.
            lapsed = renewed & (rng.random(n) < h.lapse)
            current_dropped = lapsed
            ren_h.append(holder[renewed])
            ren_d.append(np.where(lapsed, k + early, k)[renewed])
            ren_l.append(lapsed[renewed])
        else:
            ren_h.append(holder[renewed])
            ren_d.append(k[renewed])
            ren_l.append(np.zeros(renewed.sum(), bool))
        rows_h.append(holder[renewed])
        rows_i.append(prev_issue[renewed])
        rows_e.append((k + early)[renewed])
        k, alive = prev_issue, renewed
    rows_h[0], rows_i[0], rows_e[0] = holder[~current_dropped], rows_i[0][~current_dropped], rows_e[0][~current_dropped]
    return (np.concatenate(rows_h), np.concatenate(rows_i), np.concatenate(rows_e)), (
        np.concatenate(ren_h) if ren_h else np.zeros(0, np.int64),
        np.concatenate(ren_d) if ren_d else np.zeros(0, np.int64),
        np.concatenate(ren_l) if ren_l else np.zeros(0, bool),
    )


def build_licences(rng, license_types: pl.DataFrame, pop: Population, ent: Enterprises, as_of: int) -> Licences:
    """Every licence of every subject (persons 0..n-1, enterprises n..n+m-1)."""
    validity = {
        row["license_type"]: _years(row["validity_years"]) for row in license_types.iter_rows(named=True)
    }
    holdings = {**_person_holdings(rng, pop, as_of, validity), **_enterprise_holdings(rng, ent, pop.n, validity)}
    types = [t for t in license_types["license_type"].to_list()]
    skipped = [t for t in types if t not in holdings]
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("h", "t", "i", "e", "rh", "rt", "rd", "rl")}
    for t_idx, code in enumerate(types):
        if code not in holdings:
            continue
        (h, i, e), (rh, rd, rl) = _chain(rng, holdings[code], as_of)
        cols["h"].append(h), cols["t"].append(np.full(len(h), t_idx)), cols["i"].append(i), cols["e"].append(e)
        cols["rh"].append(rh), cols["rt"].append(np.full(len(rh), t_idx)), cols["rd"].append(rd), cols["rl"].append(rl)
    cat = lambda k, dt: np.concatenate(cols[k]).astype(dt) if cols[k] else np.zeros(0, dt)  # noqa: E731
    return Licences(
        types=types, holder=cat("h", np.int64), type_idx=cat("t", np.int64), issued=cat("i", np.int64),
        expires=cat("e", np.int64), ren_holder=cat("rh", np.int64), ren_type=cat("rt", np.int64),
        ren_day=cat("rd", np.int64), ren_lapsed=cat("rl", bool), skipped=skipped,
    )

"""Interaction logs driven by the latent facts: episodes and popularity noise.

An *episode* is one subject's journey with one item: views, then maybe click, favorite, consult, apply
and complete, in that order, ending around an anchor time. Life events, licence renewals, occupations,
crowds and enterprise needs create episodes on the items whose tag columns match; the rest of the
event budget is Zipf popularity noise (views, clicks, favorites, consults only) over eligible items.
Episodes are drawn for the whole city at once (a few per subject) and expanded to events per chunk of
subjects, so memory stays flat however many events are written.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data.synth.catalogue import Catalogue
from data.synth.common import DAY, WINDOW_DAYS, age_years, uniform_days

# Funnels: views (1..max_views), then p(click), p(favorite), p(consult), p(apply), p(complete | apply),
# lead days (views start up to this long before the apply time), days from apply to complete.
FUNNELS = {
    "life": (3, 0.80, 0.25, 0.35, 0.80, 0.92, 30, 7),
    "renewal": (3, 0.85, 0.10, 0.30, 1.00, 1.00, 25, 10),
    "intent": (2, 0.50, 0.10, 0.20, 0.00, 0.00, 20, 0),
    "interest": (2, 0.50, 0.15, 0.10, 0.12, 0.80, 3, 5),
    "routine": (1, 0.60, 0.05, 0.05, 0.50, 0.85, 2, 3),
    "filing": (2, 0.60, 0.05, 0.20, 1.00, 1.00, 10, 1),
}
FUNNEL_NAMES = list(FUNNELS)
_F = np.array([FUNNELS[k] for k in FUNNEL_NAMES], dtype=float)
SLOTS = 8  # view, view, view, click, favorite, consult, apply, complete
SLOT_ACTION = np.array([0, 0, 0, 1, 2, 3, 4, 5], np.int8)  # index into ACTIONS
# Portal traffic by hour of day (Asia/Shanghai): office hours and evenings.
HOUR_WEIGHTS = np.array(
    [1, 0.5, 0.3, 0.2, 0.2, 0.4, 1, 2.5, 5, 8, 9, 8.5, 6, 7, 8.5, 8.5, 7.5, 6, 5, 6, 6.5, 5.5, 4, 2], float
)
_HOUR_CDF = np.cumsum(HOUR_WEIGHTS) / HOUR_WEIGHTS.sum()


@dataclass
class Episodes:
    subject: np.ndarray
    item: np.ndarray
    anchor: np.ndarray  # apply time (seconds since epoch, local time)
    funnel: np.ndarray  # index into FUNNEL_NAMES
    complete_at: np.ndarray  # fixed completion time (renewals: the new licence's issue day), -1 = drawn

    def __len__(self) -> int:
        return len(self.subject)


class EpisodeBuilder:
    """Collects episodes; each ``add_*`` call is vectorised over many subjects."""

    def __init__(self, rng: np.random.Generator, cat: Catalogue, district: np.ndarray, age: np.ndarray,
                 local: np.ndarray, birth: np.ndarray, n_people: int):
        self.rng, self.cat = rng, cat
        self.district, self.age, self.local, self.birth = district, age, local, birth
        self.n_people = n_people
        self.parts: list[tuple] = []

    def _eligible(self, subject: np.ndarray, item: np.ndarray, day: np.ndarray) -> np.ndarray:
        person = subject < self.n_people
        s = np.minimum(subject, self.n_people - 1) if self.n_people else subject
        if not self.n_people:
            return np.ones(len(subject), bool)
        age_then = age_years(self.birth[s], day)
        c = self.cat
        ok_age = (age_then >= c.min_age[item]) & (age_then <= c.max_age[item])
        ok_hukou = ~c.hukou_only[item] | self.local[s]
        # Children under 14 do not use the portal themselves (their parents act at a window).
        return ~person | (ok_age & ok_hukou & (age_then >= 14))

    def _emit(self, subject, item, day, funnel, complete_at=None):
        subject, item, day = (np.asarray(a, np.int64) for a in (subject, item, day))
        if complete_at is None:
            complete_at = np.full(len(subject), -1, np.int64)
        self.parts.append((subject, item, day, np.full(len(subject), FUNNEL_NAMES.index(funnel), np.int8),
                           np.asarray(complete_at, np.int64)))

    def add_tagged(self, subject, key: str, day, funnel: str, k_target: float, person: bool,
                   spread: tuple[int, int] = (0, 1)):
        """For each (subject, day), episodes on about ``k_target`` of the items tagged ``key`` in the
        subject's district (popular items more often), each anchored ``spread`` days around the day."""
        subject, day = np.asarray(subject, np.int64), np.asarray(day, np.int64)
        if len(subject) == 0:
            return
        dist = self.district[subject]
        for d in np.unique(dist):
            cand = self.cat.candidates(key, int(d), person)
            if len(cand) == 0:
                continue
            rows = np.nonzero(dist == d)[0]
            pop = self.cat.popularity[cand]
            q = np.clip(k_target * pop / pop.sum(), 0.03, 0.95)
            hit = self.rng.random((len(rows), len(cand))) < q[None, :]
            r, c = np.nonzero(hit)
            offset = self.rng.integers(spread[0], spread[1], len(r))
            self._emit(subject[rows[r]], cand[c], day[rows[r]] + offset, funnel)

    def add_one(self, subject, key: str, day, funnel: str, person: bool = True):
        """One episode per (subject, day) on one item tagged ``key`` drawn by popularity."""
        subject, day = np.asarray(subject, np.int64), np.asarray(day, np.int64)
        if len(subject) == 0:
            return
        dist = self.district[subject]
        for d in np.unique(dist):
            cand = self.cat.candidates(key, int(d), person)
            if len(cand) == 0:
                continue
            rows = np.nonzero(dist == d)[0]
            cdf = np.cumsum(self.cat.popularity[cand])
            j = np.minimum(np.searchsorted(cdf, self.rng.random(len(rows)) * cdf[-1], side="right"), len(cand) - 1)
            self._emit(subject[rows], cand[j], day[rows], funnel)

    def add_renewals(self, subject, license_type: str, preferred: str | None, day, lapsed, person: bool):
        """A renewal episode ending on the new licence's issue day, or an intent episode for a lapse."""
        subject, day, lapsed = np.asarray(subject, np.int64), np.asarray(day, np.int64), np.asarray(lapsed, bool)
        dist = self.district[subject]
        for d in np.unique(dist):
            cand = self.cat.renewal_items(license_type, preferred, int(d), person)
            if len(cand) == 0:
                continue
            rows = np.nonzero(dist == d)[0]
            # The named renewal item takes most renewals; other renewing items the rest.
            main = np.nonzero(self.cat.item_ids[cand] == preferred)[0] if preferred else np.zeros(0, np.int64)
            j = self.rng.integers(0, len(cand), len(rows))
            if len(main):
                j = np.where(self.rng.random(len(rows)) < 0.8, main[0], j)
            items = cand[j]
            done = rows[~lapsed[rows]]
            dj = items[~lapsed[rows]]
            issue_time = day[done] * DAY + 9 * 3600 + self.rng.integers(0, 8 * 3600, len(done))
            apply_day = day[done] - self.rng.integers(1, 11, len(done))
            self._emit(subject[done], dj, apply_day, "renewal", issue_time)
            lp = rows[lapsed[rows]]
            # A lapse: looked at the renewal item around the expiry but never applied.
            self._emit(subject[lp], items[lapsed[rows]], day[lp] - self.rng.integers(0, 30, len(lp)), "intent")

    def add_interest(self, subject, key: str, rate: float, window_start: int, as_of: int, person: bool):
        """Recurring browsing of items tagged ``key``: Poisson(``rate``) episodes per subject."""
        subject = np.asarray(subject, np.int64)
        k = self.rng.poisson(rate, len(subject))
        rep = np.repeat(subject, k)
        self.add_one(rep, key, uniform_days(self.rng, window_start, as_of, len(rep)), "interest", person)

    def add_routine(self, subject, rate: np.ndarray, window_start: int, as_of: int, eligible_cdf):
        """Routine transactions on popular eligible repeatable items (printing certificates, querying)."""
        k = self.rng.poisson(rate)
        rep = np.repeat(np.asarray(subject, np.int64), k)
        day = uniform_days(self.rng, window_start, as_of, len(rep))
        items = eligible_cdf(rep, self.rng, repeatable_only=True, day=day)
        keep = items >= 0
        self._emit(rep[keep], items[keep], day[keep], "routine")

    def build(self) -> Episodes:
        if not self.parts:
            z = np.zeros(0, np.int64)
            return Episodes(z, z, z, np.zeros(0, np.int8), z)
        subject, item, day, funnel, complete_at = (np.concatenate([p[i] for p in self.parts]) for i in range(5))
        # Subjects only do what they are eligible for on the day (age range, local hukou).
        ok = self._eligible(subject, item, day)
        subject, item, day, funnel, complete_at = (a[ok] for a in (subject, item, day, funnel, complete_at))
        # Apply at a daytime hour: the anchor day plus 9:00-17:00.
        anchor = day * DAY + 9 * 3600 + self.rng.integers(0, 8 * 3600, len(day))
        order = np.lexsort((anchor, subject))  # by subject, then time
        return Episodes(subject[order], item[order], anchor[order], funnel[order], complete_at[order])


def slot_masks(rng: np.random.Generator, ep: Episodes, cat: Catalogue) -> np.ndarray:
    """(E, 8) booleans: which actions each episode contains. A once-only item is applied for and
    completed in the subject's first such episode only."""
    e = len(ep)
    f = _F[ep.funnel]
    n_views = 1 + (rng.random(e) * f[:, 0]).astype(np.int64)
    mask = np.zeros((e, SLOTS), bool)
    mask[:, 0] = True
    mask[:, 1] = n_views >= 2
    mask[:, 2] = n_views >= 3
    for col, p in ((3, f[:, 1]), (4, f[:, 2]), (5, f[:, 3]), (6, f[:, 4])):
        mask[:, col] = rng.random(e) < p
    mask[:, 7] = mask[:, 6] & (rng.random(e) < f[:, 5])
    once = cat.once[ep.item] & mask[:, 6]
    if once.any():
        idx = np.nonzero(once)[0]
        # Episodes are sorted by subject then time: a repeat of (subject, item) is a later episode.
        key = ep.subject[idx] * (cat.n + 1) + ep.item[idx]
        order = np.lexsort((ep.anchor[idx], key))
        later = np.zeros(len(idx), bool)
        later[order[1:]] = key[order[1:]] == key[order[:-1]]
        mask[idx[later], 6:] = False
    return mask


def time_of_day(rng: np.random.Generator, n: int) -> np.ndarray:
    """Seconds after midnight, following the portal's hourly traffic."""
    hour = np.searchsorted(_HOUR_CDF, rng.random(n), side="right").clip(0, 23)
    return hour * 3600 + rng.integers(0, 3600, n)


def expand(rng: np.random.Generator, ep: Episodes, mask: np.ndarray, window_start_s: int, as_of_s: int):
    """Events of a block of episodes: (subject, item, action, ts seconds), all in [window start, as_of)."""
    e = len(ep)
    if e == 0:
        z = np.zeros(0, np.int64)
        return z, z, np.zeros(0, np.int8), z
    f = _F[ep.funnel]
    lead = f[:, 6] * DAY
    # Pre-apply actions between anchor - lead and the anchor, at portal-traffic hours, in slot order.
    frac = rng.random((e, 6))
    pre = ep.anchor[:, None] - (lead[:, None] * frac).astype(np.int64)
    pre = (pre // DAY) * DAY + time_of_day(rng, e * 6).reshape(e, 6)
    pre = np.minimum(pre, ep.anchor[:, None] - 60)
    pre = np.sort(pre, axis=1) + np.arange(6)[None, :]
    delay = (rng.random(e) * f[:, 7] * DAY).astype(np.int64) + 1800
    complete = np.where(ep.complete_at >= 0, np.maximum(ep.complete_at, ep.anchor + 600), ep.anchor + delay)
    times = np.concatenate([pre, ep.anchor[:, None], complete[:, None]], axis=1)
    # An episode that would start before the window is moved forward whole, keeping its order.
    early = times[:, 0] < window_start_s
    shift = np.where(early, window_start_s - times[:, 0] + rng.integers(3600, 10 * DAY, e), 0)
    times = times + shift[:, None]
    sel = mask & (times < as_of_s)
    row, slot = np.nonzero(sel)
    return ep.subject[row], ep.item[row], SLOT_ACTION[slot], times[row, slot]


def noise(rng: np.random.Generator, subjects: np.ndarray, counts: np.ndarray, eligible_cdf,
          window_start_s: int, as_of_s: int):
    """Popularity noise: browsing actions only, over items each subject is eligible for."""
    subj = np.repeat(subjects, counts)
    n = len(subj)
    # Use of the portal grew over the two years: more noise in the recent months.
    span = as_of_s - window_start_s
    day = window_start_s // DAY + (np.sqrt(rng.random(n)) * (span // DAY)).astype(np.int64)
    ts = np.minimum(day * DAY + time_of_day(rng, n), as_of_s - 1)
    items = eligible_cdf(subj, rng, repeatable_only=False, day=day)
    keep = items >= 0
    subj, items, ts = subj[keep], items[keep], ts[keep]
    n = len(subj)
    action = np.searchsorted(np.array([0.72, 0.92, 0.96]), rng.random(n), side="right").astype(np.int8)
    return subj, items, action, ts


def window_bounds(as_of: int) -> tuple[int, int]:
    """(start, end) of the event window in seconds: the two years before as_of, as_of excluded."""
    return (as_of - WINDOW_DAYS) * DAY, as_of * DAY

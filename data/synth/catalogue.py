"""The reference catalogue and licence types as the synthetic city needs them: items indexed by the tag
codes they declare, their eligibility, their district (for district variants) and a Zipf popularity.

Items are selected by their tag columns only, never by id, so a new catalogue version works unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np
import polars as pl

from data.synth.common import DISTRICT_NAMES, INDUSTRIES

_TAG_COLUMNS = {"life_events": "life_event", "crowds": "crowd", "occupations": "occupation"}
_ENTERPRISE_CODES = {
    "new_business", "high_tech_candidate", "food_catering", "annual_report_due",
    "size_micro", "size_small", "size_medium", "size_large",
}


def _token_key(column: str, token: str) -> str:
    """A catalogue tag as one key: ``life_event.birth``, ``crowd.elderly``, ``enterprise.new_business``,
    ``industry.C`` (bare codes get their column's dimension)."""
    token = token.strip()
    if column == "industries":
        return "industry." + token.split("_")[-1].split(".")[-1].upper()
    if "." in token:
        return token
    if token in _ENTERPRISE_CODES:
        return "enterprise." + token
    return f"{_TAG_COLUMNS[column]}.{token}"


@dataclass
class Catalogue:
    """Column arrays over the catalogue's items (index = row of ``frame``)."""

    frame: pl.DataFrame
    item_ids: np.ndarray
    person: np.ndarray  # audience person (else enterprise)
    min_age: np.ndarray  # float, -inf when unset
    max_age: np.ndarray  # float, +inf when unset
    hukou_only: np.ndarray
    once: np.ndarray
    district: np.ndarray  # index into DISTRICTS, -1 = city-wide
    popularity: np.ndarray  # Zipf weight, shared by the district variants of one service
    tags: dict[str, np.ndarray]  # tag key -> item indices
    general: np.ndarray  # no life-event, crowd or occupation tag: a service anyone may need any time
    industry_ok: np.ndarray  # (items, 20): the item serves that industry section (all when none listed)
    renews: dict[str, np.ndarray]  # licence type -> item indices that renew it

    @property
    def n(self) -> int:
        return len(self.item_ids)

    def candidates(self, key: str, district: int, person: bool) -> np.ndarray:
        """Items tagged ``key`` for one audience, city-wide or in ``district``."""
        idx = self.tags.get(key, np.zeros(0, np.int64))
        return self._local(idx, district, person)

    def _local(self, idx: np.ndarray, district: int, person: bool) -> np.ndarray:
        keep = (self.person[idx] == person) & ((self.district[idx] == -1) | (self.district[idx] == district))
        return idx[keep]

    def renewal_items(self, license_type: str, preferred: str | None, district: int, person: bool) -> np.ndarray:
        idx = self.renews.get(license_type, np.zeros(0, np.int64))
        if preferred:
            pref = np.nonzero(self.item_ids == preferred)[0]
            if len(pref):
                idx = np.union1d(pref, idx)
        return self._local(idx, district, person)


def build_catalogue(df: pl.DataFrame, rng: np.random.Generator) -> Catalogue:
    """Index a catalogue typed by :func:`data.reference.load_catalog`."""
    n = df.height
    text = (df["name"].fill_null("") + " " + df["department"].fill_null("")).to_numpy()
    district = np.full(n, -1, np.int64)
    for d, name in enumerate(DISTRICT_NAMES):
        hit = np.char.find(text.astype(str), name) >= 0
        district[(district == -1) & hit] = d
    # One service offered by several districts shares one popularity rank: strip the district name.
    service = df["name"].fill_null("").to_numpy().astype(str)
    for name in DISTRICT_NAMES:
        service = np.char.strip(np.char.replace(service, name, ""))
    person = (df["audience"].fill_null("").str.strip_chars() == "person").to_numpy()
    key = np.char.add(np.where(person, "p:", "e:"), service)
    uniq, inverse = np.unique(key, return_inverse=True)
    rank = rng.permutation(len(uniq))
    popularity = (1.0 / (1.0 + rank) ** 0.9)[inverse]

    tags: dict[str, list[int]] = {}
    for column in ("life_events", "crowds", "occupations", "industries"):
        for i, cell in enumerate(df[column].to_list()):
            if not cell:
                continue
            for token in str(cell).split("|"):
                if token.strip():
                    tags.setdefault(_token_key(column, token), []).append(i)
    renews: dict[str, list[int]] = {}
    for i, cell in enumerate(df["renews_license"].to_list()):
        if cell and str(cell).strip():
            renews.setdefault(str(cell).strip(), []).append(i)
    targeted = np.zeros(n, bool)
    for column in ("life_events", "crowds", "occupations"):
        targeted |= df[column].fill_null("").str.strip_chars().str.len_chars().to_numpy() > 0
    industry_ok = np.ones((n, len(INDUSTRIES)), bool)
    for i, cell in enumerate(df["industries"].to_list()):
        if cell and str(cell).strip():
            letters = {t.strip().split("_")[-1].upper() for t in str(cell).split("|")}
            industry_ok[i] = [c in letters for c in INDUSTRIES]
    return Catalogue(
        frame=df,
        item_ids=df["item_id"].to_numpy().astype(str),
        person=person,
        min_age=df["min_age"].cast(pl.Float64).fill_null(-np.inf).to_numpy(),
        max_age=df["max_age"].cast(pl.Float64).fill_null(np.inf).to_numpy(),
        hukou_only=df["local_hukou_only"].to_numpy(),
        once=df["once_per_subject"].to_numpy(),
        district=district,
        popularity=popularity,
        tags={k: np.unique(np.array(v, np.int64)) for k, v in tags.items()},
        general=~targeted,
        industry_ok=industry_ok,
        renews={k: np.unique(np.array(v, np.int64)) for k, v in renews.items()},
    )

"""Enterprises of the synthetic city: industry, district, founding date, size, legal representative,
and the latent traits (food catering, high-tech candidacy) that drive their licences and behaviour."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np

from data.synth.common import CENTRAL, DISTRICT_WEIGHTS, INDUSTRIES, YEAR, day_number, pick
from data.synth.population import Population

# Share of registered enterprises by GB/T 4754 section in a big service-economy city: trade (F),
# business services (L), research and technical services (M), software (I), construction (E), catering (H).
INDUSTRY_WEIGHTS = dict(
    A=0.4, B=0.05, C=7.0, D=0.3, E=5.0, F=25.0, G=4.0, H=5.5, I=9.0, J=3.0, K=4.0, L=14.0, M=12.0,
    N=1.0, O=3.0, P=1.5, Q=0.7, R=2.0, S=0.5, T=0.05,
)
_SIZE_FACTOR = dict(C=3.0, E=2.5, D=4.0, B=3.0, G=1.8, J=1.6, K=1.5, Q=2.0, P=1.5)
_NAME_WORDS = dict(
    A="农业科技", B="矿业", C="机械制造", D="能源", E="建设工程", F="商贸", G="物流", H="餐饮管理",
    I="信息技术", J="投资管理", K="房地产开发", L="企业管理咨询", M="科技", N="环境工程", O="家政服务",
    P="教育科技", Q="健康管理", R="文化传媒", S="社会服务", T="国际交流",
)
_BRAND = list("华鑫源创博瑞弘泰安盛德信达恒丰宏远晨启明翔睿智嘉和新锦祥荣悦峰宇辰云航卓越星汇通联众诚")
TECH = {"C", "I", "M"}


@dataclass
class Enterprises:
    industry: np.ndarray  # index into INDUSTRIES
    district: np.ndarray
    founded: np.ndarray  # day number
    employees: np.ndarray
    legal_rep: np.ndarray  # person index, -1 when the city has no adult
    names: np.ndarray
    catering: np.ndarray
    food: np.ndarray  # sells or serves food (catering or food retail): holds a food business licence
    high_tech_candidate: np.ndarray

    @property
    def n(self) -> int:
        return len(self.founded)

    def letter(self) -> np.ndarray:
        return np.array(INDUSTRIES)[self.industry]


def size_band(employees: np.ndarray) -> np.ndarray:
    """micro < 10 <= small < 100 <= medium < 1000 <= large (the taxonomy's bands)."""
    return np.select([employees < 10, employees < 100, employees < 1000], ["micro", "small", "medium"], "large")


def build_enterprises(rng: np.random.Generator, m: int, pop: Population, as_of: int) -> Enterprises:
    weights = np.array([INDUSTRY_WEIGHTS[c] for c in INDUSTRIES])
    industry = pick(rng, m, weights)
    letters = np.array(INDUSTRIES)[industry]
    # Offices cluster in the centre and Pudong more than residents do.
    district = pick(rng, m, DISTRICT_WEIGHTS * np.where(CENTRAL, 1.7, 1.0))
    # About 12% registered in the last year; the rest with an exponential age (mean 7 years).
    new = rng.random(m) < 0.12
    age_days = np.where(new, rng.integers(0, 365, m), 365 + rng.exponential(7 * YEAR, m).astype(np.int64))
    founded = np.maximum(as_of - 1 - age_days, day_number(date(1988, 1, 1)))
    factor = np.array([_SIZE_FACTOR.get(c, 1.0) for c in INDUSTRIES])[industry]
    # Lognormal body with a Pareto-like tail of big employers.
    tail = np.where(rng.random(m) < 0.02, rng.pareto(1.1, m) * 30 + 10, 1.0)
    employees = np.ceil(rng.lognormal(1.1, 1.35, m) * factor * tail).astype(np.int64)
    # Young firms are small.
    employees = np.where(as_of - founded < 365, np.minimum(employees, rng.integers(1, 30, m)), employees)
    employees = np.clip(employees, 1, 60_000)

    adult = np.nonzero((pop.age >= 25) & (pop.age <= 70))[0]
    if len(adult):
        occ = pop.occupation[adult]
        w = np.where(occ == 6, 8.0, np.where(occ >= 0, 1.0, 0.3))  # self-employed run firms most often
        legal_rep = adult[pick(rng, m, w)]
    else:
        legal_rep = np.full(m, -1, np.int64)

    brand = np.char.add(np.array(_BRAND)[rng.integers(0, len(_BRAND), m)], np.array(_BRAND)[rng.integers(0, len(_BRAND), m)])
    names = np.char.add(np.char.add(np.char.add("上海", brand), np.array([_NAME_WORDS[c] for c in letters], dtype=str)), "有限公司")

    catering = (letters == "H") & (rng.random(m) < 0.8)
    food = catering | ((letters == "F") & (rng.random(m) < 0.25))
    # Technology firms at least a year old with a real team can apply for high-tech certification.
    high_tech_candidate = np.isin(letters, list(TECH)) & (as_of - founded >= 365) & (employees >= 10) & (employees < 2000)
    return Enterprises(industry, district, founded, employees, legal_rep, names, catering, food, high_tech_candidate)

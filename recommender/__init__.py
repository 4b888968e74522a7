"""个性推荐: implicit-feedback models, candidate sources, a LightGBM ranker and published feeds.

Stage entry points (see docs/architecture.md): :func:`train` and :func:`recommend`.
"""

from recommender.training import RecommendSummary, TrainSummary, recommend, train

# What another engine may import from this one (tests/test_layering.py holds every engine to it): these modules,
# and in them the names that do not start with "_". The rest is this engine's own and may change without notice.
PUBLIC_MODULES = ("recommender", "recommender.feeds")

__all__ = ["train", "recommend", "TrainSummary", "RecommendSummary"]

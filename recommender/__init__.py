"""个性推荐: implicit-feedback models, candidate sources, a LightGBM ranker and published feeds.

Stage entry points (see docs/architecture.md): :func:`train` and :func:`recommend`.
"""

from recommender.training import RecommendSummary, TrainSummary, recommend, train

__all__ = ["train", "recommend", "TrainSummary", "RecommendSummary"]

"""个性推荐: implicit-feedback models, candidate sources, a LightGBM ranker and published feeds."""

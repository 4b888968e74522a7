"""recommender tables (named migrations, applied by yiwang.store)."""

MIGRATIONS: list[tuple[str, str]] = []

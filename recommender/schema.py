"""Feed tables: each batch publishes a new version; a pointer names the version being served."""

MIGRATIONS: list[tuple[str, str]] = [
    (
        "recommender_0001_feeds",
        """
        CREATE TABLE feed_versions (
            version INTEGER PRIMARY KEY,
            model_version TEXT NOT NULL,
            as_of TEXT NOT NULL,
            generated_at TEXT NOT NULL,
            status TEXT NOT NULL,             -- building / published / retired
            subjects INTEGER NOT NULL DEFAULT 0
        );
        CREATE TABLE feed_items (
            version INTEGER NOT NULL,
            subject_id TEXT NOT NULL,
            rank INTEGER NOT NULL,            -- 1-based
            item_id TEXT NOT NULL,
            score REAL NOT NULL,
            reasons_json TEXT NOT NULL,       -- [{"source":..., "zh":..., "en":..., "ref":...}, ...] 1-3 reasons
            PRIMARY KEY (version, subject_id, rank)
        ) WITHOUT ROWID;
        CREATE TABLE serving_pointers (
            name TEXT PRIMARY KEY,            -- e.g. 'feed_version'
            value TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        """,
    ),
    (
        # One row per subject and version instead of one per item: a version of 1M subjects is 1M rows, not 20M,
        # and the reason texts (mostly shared) are stored once per version in feed_reasons. feed_items stays for
        # stores written before this migration; the publisher no longer writes it (re-run `yiwang recommend`).
        "recommender_0002_feed_rows",
        """
        CREATE TABLE feed_rows (
            version INTEGER NOT NULL,
            subject_id TEXT NOT NULL,
            items TEXT NOT NULL,              -- JSON [{"i": item_id, "s": score, "r": reasons id}, ...] in rank order
            PRIMARY KEY (version, subject_id)
        ) WITHOUT ROWID;
        CREATE TABLE feed_reasons (
            version INTEGER NOT NULL,
            rid INTEGER NOT NULL,
            reasons_json TEXT NOT NULL,       -- [{"source":..., "zh":..., "en":..., "ref":...}, ...] 1-3 reasons
            PRIMARY KEY (version, rid)
        ) WITHOUT ROWID;
        """,
    ),
    (
        # Versions published before reasons left sensitive tags out named them (ref "crowd.hardship", "crowd:crowd.
        # disabled", ...) and every read path serves stored reasons as they are: rewrite them as today's publisher
        # would (the tag reason dropped, crowd popularity read as city-wide). The codes are the taxonomy's sensitive
        # ones when this was written; later reasons never store any.
        "recommender_0003_reasons_without_sensitive_tags",
        """
        UPDATE feed_reasons SET reasons_json = (
            SELECT json_group_array(json(CASE
                WHEN json_extract(value, '$.ref') IN ('crowd:crowd.hardship', 'crowd:crowd.disabled')
                THEN json_object('source', 'popular', 'zh', '全市热门事项', 'en', 'Popular across the city',
                                 'ref', 'global:')
                ELSE value END))
            FROM (SELECT key, value FROM json_each(feed_reasons.reasons_json) ORDER BY key)
            WHERE coalesce(json_extract(value, '$.ref'), '') NOT IN ('crowd.hardship', 'crowd.disabled'))
        WHERE reasons_json LIKE '%crowd.hardship%' OR reasons_json LIKE '%crowd.disabled%';
        UPDATE feed_items SET reasons_json = (
            SELECT json_group_array(json(CASE
                WHEN json_extract(value, '$.ref') IN ('crowd:crowd.hardship', 'crowd:crowd.disabled')
                THEN json_object('source', 'popular', 'zh', '全市热门事项', 'en', 'Popular across the city',
                                 'ref', 'global:')
                ELSE value END))
            FROM (SELECT key, value FROM json_each(feed_items.reasons_json) ORDER BY key)
            WHERE coalesce(json_extract(value, '$.ref'), '') NOT IN ('crowd.hardship', 'crowd.disabled'))
        WHERE reasons_json LIKE '%crowd.hardship%' OR reasons_json LIKE '%crowd.disabled%';
        """,
    ),
]

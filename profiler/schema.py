"""profiler tables (named migrations, applied by yiwang.store).

``profiles`` is never updated in place: each batch fills ``profiles_build`` and swaps it in by rename inside
one transaction, so a reader sees the old batch or the new one, never a mix.
"""

MIGRATIONS: list[tuple[str, str]] = [
    (
        "profiler_0001_profiles",
        """
        CREATE TABLE profiles (
            subject_id TEXT PRIMARY KEY,
            subject_type TEXT NOT NULL,       -- person / enterprise / unknown (seen only in events)
            batch_id INTEGER NOT NULL,
            profile_json TEXT NOT NULL        -- the whole profile, sensitive fields included (stripped at read)
        ) WITHOUT ROWID;
        CREATE TABLE profile_batches (
            batch_id INTEGER PRIMARY KEY AUTOINCREMENT,
            as_of TEXT NOT NULL,
            started_at TEXT NOT NULL,
            published_at TEXT,
            n_persons INTEGER,
            n_enterprises INTEGER,
            n_unknown INTEGER
        );
        """,
    ),
    (
        # Profiles are about a kilobyte of JSON each; SQLite stores rows that large poorly in a WITHOUT ROWID
        # b-tree (2-3x slower to fill), so the serving table becomes a rowid table. Its rows are rebuilt by
        # the next `yiwang profile`.
        "profiler_0002_profiles_rowid",
        """
        DROP TABLE IF EXISTS profiles_build;
        DROP TABLE profiles;
        CREATE TABLE profiles (
            subject_id TEXT PRIMARY KEY,
            subject_type TEXT NOT NULL,       -- person / enterprise / unknown (seen only in events)
            batch_id INTEGER NOT NULL,
            profile_json TEXT NOT NULL        -- the whole profile, sensitive fields included (stripped at read)
        );
        """,
    ),
]

"""profiler tables (named migrations, applied by data.store).

``profiles`` is never updated in place: each batch fills ``profiles_build`` and swaps it in by rename inside
one transaction, so a reader sees the old batch or the new one, never a mix. Since profiler_0003 a row is a
block of consecutive subjects, not one subject (see :func:`profiler.read_profile`).
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
    (
        # A profile is read one subject at a time but written a million at a time, and a million ~1 KB rows cost
        # SQLite (and the JSON encoding before it) most of a profile batch. The serving table now holds blocks
        # of consecutive subjects (sorted by subject_id) as LZ4-compressed Arrow IPC; a read decodes one block.
        # The next `yiwang profile` fills it.
        "profiler_0003_profile_blocks",
        """
        DROP TABLE IF EXISTS profiles_build;
        DROP TABLE profiles;
        CREATE TABLE profiles (
            first_subject TEXT PRIMARY KEY,   -- the block holds subjects first_subject .. last_subject, sorted
            last_subject TEXT NOT NULL,
            batch_id INTEGER NOT NULL,
            n_subjects INTEGER NOT NULL,
            block_bytes INTEGER NOT NULL,     -- the block's size before compression
            block BLOB NOT NULL               -- LZ4 frame of an Arrow IPC stream of the profiles, sensitive fields included
        );
        """,
    ),
    (
        # A batch whose process died before publishing is marked failed by the next open of the store
        # (profiler.recover_dead_batches) instead of staying "started" forever.
        "profiler_0004_batch_failed_at",
        """
        ALTER TABLE profile_batches ADD COLUMN failed_at TEXT;
        """,
    ),
]

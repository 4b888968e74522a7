"""Tag tables. ``tags`` holds the tags in force, replaced as a whole by each batch in one transaction;
``tag_suppressions`` holds what citizens deleted, which no later batch may bring back until restored."""

MIGRATIONS: list[tuple[str, str]] = [
    (
        "taggers_0001_tags",
        """
        CREATE TABLE tags (
            subject_id TEXT NOT NULL,
            code TEXT NOT NULL,               -- e.g. life_event.marriage, crowd.elderly, occupation.teacher
            dimension TEXT NOT NULL,          -- life_event / crowd / occupation / enterprise
            confidence REAL NOT NULL,         -- 0..1 (1.0 for registry facts)
            source TEXT NOT NULL,             -- rule id@version, or model name@version
            evidence_zh TEXT NOT NULL,
            evidence_en TEXT NOT NULL,
            valid_from TEXT NOT NULL,         -- ISO date
            valid_until TEXT,                 -- ISO date; NULL = open-ended
            sensitive INTEGER NOT NULL DEFAULT 0,
            as_of TEXT NOT NULL,              -- the batch that wrote it
            PRIMARY KEY (subject_id, code)
        ) WITHOUT ROWID;
        CREATE INDEX tags_code ON tags(code);
        CREATE TABLE tag_suppressions (
            subject_id TEXT NOT NULL,
            code TEXT NOT NULL,
            deleted_at TEXT NOT NULL,
            PRIMARY KEY (subject_id, code)
        ) WITHOUT ROWID;
        """,
    ),
    (
        # Tag rows carry two evidence texts (~160 bytes); SQLite fills a WITHOUT ROWID table of rows that size
        # 2-3x slower than a rowid table, and each batch rewrites every tag. Same columns, same keys.
        "taggers_0002_tags_rowid",
        """
        CREATE TABLE tags_new (
            subject_id TEXT NOT NULL,
            code TEXT NOT NULL,
            dimension TEXT NOT NULL,
            confidence REAL NOT NULL,
            source TEXT NOT NULL,
            evidence_zh TEXT NOT NULL,
            evidence_en TEXT NOT NULL,
            valid_from TEXT NOT NULL,
            valid_until TEXT,
            sensitive INTEGER NOT NULL DEFAULT 0,
            as_of TEXT NOT NULL,
            PRIMARY KEY (subject_id, code)
        );
        INSERT INTO tags_new SELECT subject_id, code, dimension, confidence, source, evidence_zh, evidence_en,
            valid_from, valid_until, sensitive, as_of FROM tags;
        DROP TABLE tags;
        ALTER TABLE tags_new RENAME TO tags;
        CREATE INDEX tags_code ON tags(code);
        """,
    ),
]

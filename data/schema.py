"""Foundation tables: registries, catalogue, ingest bookkeeping, quarantine, citizen preferences."""

MIGRATIONS = [
    (
        "0001_foundation",
        """
        CREATE TABLE people (
            person_id TEXT PRIMARY KEY,
            birth_date TEXT NOT NULL,           -- ISO date
            gender TEXT NOT NULL,               -- M / F
            district TEXT NOT NULL,
            local_hukou INTEGER NOT NULL,       -- 0/1
            id_hash TEXT,                       -- HMAC-SHA256 of the resident ID number; never the number itself
            marital_status TEXT,
            household_id TEXT,
            occupation TEXT,
            low_income INTEGER,
            disability INTEGER,
            ingest_id INTEGER NOT NULL
        );
        CREATE INDEX people_household ON people(household_id);
        CREATE TABLE enterprises (
            enterprise_id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            industry TEXT NOT NULL,             -- GB/T 4754 section letter A-T
            district TEXT NOT NULL,
            founded_on TEXT NOT NULL,
            employees INTEGER NOT NULL,
            uscc TEXT,
            legal_rep_id TEXT,
            ingest_id INTEGER NOT NULL
        );
        CREATE TABLE licenses (
            license_id TEXT PRIMARY KEY,
            holder_id TEXT NOT NULL,
            license_type TEXT NOT NULL,
            issued_on TEXT NOT NULL,
            expires_on TEXT,                    -- NULL = no expiry
            ingest_id INTEGER NOT NULL
        );
        CREATE INDEX licenses_holder ON licenses(holder_id);
        CREATE INDEX licenses_expiry ON licenses(expires_on);
        CREATE TABLE catalog (
            item_id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            department TEXT NOT NULL,
            audience TEXT NOT NULL,             -- person / enterprise
            category TEXT NOT NULL,
            life_events TEXT,                   -- tag codes separated by |
            crowds TEXT,
            occupations TEXT,
            industries TEXT,
            once_per_subject INTEGER NOT NULL DEFAULT 0,
            min_age INTEGER,
            max_age INTEGER,
            local_hukou_only INTEGER NOT NULL DEFAULT 0,
            renews_license TEXT,
            ingest_id INTEGER NOT NULL
        );
        CREATE TABLE ingests (
            ingest_id INTEGER PRIMARY KEY AUTOINCREMENT,
            source TEXT NOT NULL,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            as_of TEXT,
            status TEXT NOT NULL DEFAULT 'running',   -- running / done / failed
            summary_json TEXT
        );
        CREATE TABLE quarantine (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            ingest_id INTEGER NOT NULL,
            table_name TEXT NOT NULL,
            source_file TEXT NOT NULL,
            line INTEGER,                       -- 1-based line in the source file (header = line 1); NULL for Parquet
            field TEXT,
            reason TEXT NOT NULL,
            raw TEXT                            -- the rejected row as JSON, with resident IDs masked
        );
        CREATE INDEX quarantine_ingest ON quarantine(ingest_id, table_name);
        CREATE TABLE subject_preferences (
            subject_id TEXT PRIMARY KEY,
            personalisation INTEGER NOT NULL DEFAULT 1,   -- 0 = switched off (PIPL Art. 24)
            channels TEXT NOT NULL DEFAULT '["in_app"]', -- JSON list of in_app / webhook
            updated_at TEXT NOT NULL
        );
        CREATE TABLE dismissals (
            subject_id TEXT NOT NULL,
            item_id TEXT NOT NULL,
            dismissed_at TEXT NOT NULL,
            PRIMARY KEY (subject_id, item_id)
        );
        """,
    ),
]

MIGRATIONS += [
    (
        # Facts about the store itself; first: the fingerprint of the key resident IDs are hashed with
        # (HMAC(key, "yiwang-key-fingerprint")), so ingest can refuse a different key instead of re-hashing.
        "0002_store_meta_id_hash_key_fingerprint",
        """
        CREATE TABLE store_meta (
            name TEXT PRIMARY KEY,              -- e.g. id_hash_key_fingerprint
            value TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        """,
    ),
    (
        # A registry table's generation goes up in the transaction that loads it; its Parquet snapshot
        # records the generation it was written from, so a snapshot older than SQLite is detected and redone.
        "0003_store_registry_generations",
        """
        CREATE TABLE registry_generations (
            table_name TEXT PRIMARY KEY,
            generation INTEGER NOT NULL
        );
        """,
    ),
]

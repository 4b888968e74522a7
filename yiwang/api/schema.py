"""HTTP API tables: API keys and the audit log."""

MIGRATIONS: list[tuple[str, str]] = [
    (
        "api_0001_keys_audit",
        """
        CREATE TABLE api_keys (
            key_id TEXT PRIMARY KEY,          -- public part of the key, shown in lists and the audit log
            name TEXT NOT NULL,               -- who holds it (a system or team), never a citizen
            key_hash TEXT NOT NULL,           -- sha256 hex of the whole key; the key itself is never stored
            scopes TEXT NOT NULL,             -- space-separated scope names
            created_at TEXT NOT NULL,
            revoked_at TEXT                   -- NULL = active
        ) WITHOUT ROWID;
        CREATE TABLE audit_log (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at TEXT NOT NULL,                 -- ISO-8601 UTC
            key_id TEXT NOT NULL,
            action TEXT NOT NULL,             -- e.g. profile.read, tag.delete, events.append
            subject TEXT,                     -- subject id, alert id, rule id or model version; never personal data
            outcome TEXT NOT NULL,            -- ok / error code
            request_id TEXT NOT NULL
        );
        CREATE INDEX audit_log_subject ON audit_log(subject, at);
        CREATE INDEX audit_log_key ON audit_log(key_id, at);
        """,
    ),
]

"""HTTP API tables: API keys and the audit log."""

MIGRATIONS: list[tuple[str, str]] = []

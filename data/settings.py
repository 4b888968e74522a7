"""Settings, read once from the environment (prefix ``YIWANG_``), an optional ``.env`` file, and defaults.

A bad value raises :class:`data.errors.ConfigError` naming the environment key at fault.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sqlite3
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from data.errors import ConfigError

# The reference files ship inside this package (catalogue, licence types, taxonomy, default rules).
REFERENCE_DIR = Path(__file__).resolve().parent
# Tests and scripts of a source checkout use it; an installed package has no checkout.
REPO_ROOT = REFERENCE_DIR.parent
TIMEZONE = "Asia/Shanghai"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="YIWANG_", env_file=".env", extra="ignore")

    # -- foundation ------------------------------------------------------------------------------
    home: Path = Field(default=Path(".yiwang"), description="Directory holding the SQLite store and event log")
    data_dir: Path = Field(default=REFERENCE_DIR, description="Reference data (catalogue, licence types, taxonomy, rules)")
    id_hash_key: str | None = Field(default=None, description="HMAC key for resident ID numbers; generated into HOME if unset")
    ingest_batch_rows: int = Field(default=1_000_000, gt=0, description="Rows per streamed batch when ingesting events")
    unknown_subject_events: Literal["quarantine", "keep"] = Field(
        default="quarantine", description="Events of subjects in neither registry: quarantine them, or keep them"
    )

    # -- profiles and tags -------------------------------------------------------------------------
    tag_rules_file: Path | None = Field(default=None, description="Tag rules file; default DATA_DIR/tag_rules.yaml")
    occupation_min_confidence: float = Field(default=0.6, ge=0.0, le=1.0)

    # -- recommender -------------------------------------------------------------------------------
    feed_size: int = Field(default=20, gt=0, le=200)
    feed_versions_kept: int = Field(default=5, gt=0)
    renewal_window_days: int = Field(default=90, gt=0)
    recommender_config_file: Path | None = Field(default=None, description="Recommender config; default DATA_DIR/recommender.yaml")

    # -- alerts and delivery -----------------------------------------------------------------------
    reminder_rules_file: Path | None = Field(default=None, description="Reminder rules; default DATA_DIR/reminder_rules.yaml")
    webhook_url: str | None = None
    webhook_timeout_s: float = Field(default=5.0, gt=0)
    webhook_max_attempts: int = Field(default=6, gt=0)
    webhook_backoff_base_s: float = Field(default=30.0, ge=0)
    webhook_concurrency: int = Field(default=4, ge=1, le=64, description="Webhook sends in flight at once")
    quiet_hours: str = Field(default="22:00-08:00", description="No webhook sends in this local-time window")
    daily_alert_cap: int = Field(default=3, ge=0)

    # -- scheduler (cron expressions, Asia/Shanghai) -----------------------------------------------
    schedule_profile_tag: str = "0 1 * * *"
    schedule_feed_refresh: str = "0 3 * * *"
    schedule_retrain: str = "0 2 * * 0"
    schedule_alerts: str = "5 * * * *"
    schedule_delivery: str = "*/2 * * * *"
    schedule_misfire_grace_s: int = Field(default=3600, gt=0, description="A job missed by less than this still runs (once)")

    # -- HTTP API ----------------------------------------------------------------------------------
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8080, gt=0, lt=65536)
    api_max_body_bytes: int = Field(default=1_048_576, gt=0)
    api_max_events_per_request: int = Field(default=1000, gt=0)

    @field_validator("quiet_hours")
    @classmethod
    def _quiet_hours_shape(cls, v: str) -> str:
        try:
            start, end = v.split("-")
            for part in (start, end):
                hh, mm = part.split(":")
                if not (0 <= int(hh) < 24 and 0 <= int(mm) < 60):
                    raise ValueError
        except ValueError:
            raise ValueError("expected HH:MM-HH:MM, e.g. 22:00-08:00") from None
        return v

    # -- derived paths -----------------------------------------------------------------------------
    @property
    def db_path(self) -> Path:
        return self.home / "yiwang.db"

    @property
    def events_dir(self) -> Path:
        return self.home / "events"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def hash_key_file(self) -> Path:
        return self.home / "secrets" / "id_hash.key"

    def hash_key_source(self) -> str:
        """Where :meth:`hash_key` takes the key from, as a person would name it in a message."""
        return "setting YIWANG_ID_HASH_KEY" if self.id_hash_key else f"key file {self.hash_key_file}"

    def hash_key(self, *, new_key_allowed: bool = False) -> bytes:
        """The HMAC key for resident IDs: from settings, else a random key kept (0600) in HOME.

        A new random key is made only for a home whose store holds no hashed ID yet (or when
        ``new_key_allowed``: ``yiwang ingest --rekey``): a replaced key would silently re-hash every ID."""
        if self.id_hash_key:
            return self.id_hash_key.encode()
        path = self.hash_key_file
        if not path.exists():
            if not new_key_allowed and store_holds_hashed_ids(self.db_path):
                raise ConfigError(
                    f"the ID-hash key file {path} is missing, but the store {self.db_path} holds resident IDs "
                    "hashed with a key: restore that file or set YIWANG_ID_HASH_KEY to the original key (a new key "
                    "would re-hash every ID); to re-hash them with a new key on purpose, run `yiwang ingest --rekey`"
                )
            os.umask(0o077)  # the home and secrets/ are created private, like the store (data.store)
            path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
        return path.read_text().strip().encode()


def key_fingerprint(key: bytes) -> str:
    """What the store keeps of the ID-hash key: enough to recognise it, nothing to recover it."""
    return hmac.new(key, b"yiwang-key-fingerprint", hashlib.sha256).hexdigest()


def store_holds_hashed_ids(db_path: Path) -> bool:
    """Whether the store has a key fingerprint recorded or any hashed resident ID (read-only look)."""
    if not Path(db_path).exists():
        return False
    # The owners' reads, imported here: settings are read before (and without) any store being opened.
    from data.registry import holds_hashed_ids
    from data.store import recorded_key_fingerprint

    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "store_meta" in tables and recorded_key_fingerprint(conn) is not None:
            return True
        return "people" in tables and holds_hashed_ids(conn)
    finally:
        conn.close()


def load_settings(**overrides) -> Settings:
    """Build settings from env/.env/defaults plus explicit overrides; a bad value names its key."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "?"
        raise ConfigError(f"setting YIWANG_{field.upper()}: {first['msg']}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings read once per process."""
    return load_settings()

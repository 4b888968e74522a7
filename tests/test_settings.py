import pytest

from data.errors import ConfigError
from data.settings import load_settings


def test_bad_value_names_its_key(monkeypatch):
    monkeypatch.setenv("YIWANG_FEED_SIZE", "lots")
    with pytest.raises(ConfigError, match="YIWANG_FEED_SIZE"):
        load_settings()


def test_bad_quiet_hours_names_its_key(monkeypatch):
    monkeypatch.setenv("YIWANG_QUIET_HOURS", "late")
    with pytest.raises(ConfigError, match="YIWANG_QUIET_HOURS"):
        load_settings()


def test_hash_key_generated_once_and_private(tmp_path):
    s = load_settings(home=tmp_path)
    k1 = s.hash_key()
    assert k1 == load_settings(home=tmp_path).hash_key()
    assert (tmp_path / "secrets" / "id_hash.key").stat().st_mode & 0o077 == 0

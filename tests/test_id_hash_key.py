"""The ID-hash key is bound to the store (issue 10, item 8): a different YIWANG_ID_HASH_KEY or a lost
HOME/secrets/id_hash.key is refused (exit 2, naming the setting and the file) instead of silently re-hashing
every resident ID; `yiwang ingest --rekey` replaces the key on purpose and says what it did."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from data.contract import resident_id_check_char
from data.errors import ConfigError
from data.registry import stored_records
from data.settings import load_settings

REPO_ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-c", "from yiwang.cli import main; main()"]


def rid(body17: str) -> str:
    return body17 + resident_id_check_char(body17)


PEOPLE = (
    "person_id,birth_date,gender,district,local_hukou,id_number\n"
    f"P1,1980-01-01,F,黄浦区,1,{rid('31010119800101001')}\n"
    f"P2,1990-02-02,M,浦东新区,0,{rid('31011519900202002')}\n"
    f"P3,2015-03-03,F,徐汇区,1,{rid('31010420150303003')}\n"
)


@pytest.fixture
def export(tmp_path) -> Path:
    d = tmp_path / "export"
    d.mkdir()
    (d / "people.csv").write_text(PEOPLE, encoding="utf-8")
    return d


def ingest(home: Path, export: Path, *extra: str, key: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("YIWANG_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    if key is not None:
        env["YIWANG_ID_HASH_KEY"] = key
    return subprocess.run([*CLI, "--home", str(home), "ingest", str(export), "--as-of", "2026-11-20", *extra],
                          env=env, capture_output=True, text=True, timeout=300)


def hashes(home: Path) -> dict[str, str]:
    with sqlite3.connect(home / "yiwang.db") as conn:
        return dict(stored_records(conn, "people", ["person_id", "id_hash"]))


def test_a_different_key_setting_is_refused_and_changes_nothing(tmp_path, export):
    home = tmp_path / "home"
    first = ingest(home, export, key="the-original-key")
    assert first.returncode == 0, first.stderr
    before = hashes(home)
    assert len(before) == 3 and all(before.values())

    other = ingest(home, export, key="some-other-key")
    assert other.returncode == 2, other.stdout + other.stderr
    message = " ".join(other.stderr.split())
    assert "YIWANG_ID_HASH_KEY" in message and "--rekey" in message
    assert "Traceback" not in other.stderr
    assert hashes(home) == before

    again = ingest(home, export, key="the-original-key")
    assert again.returncode == 0, again.stderr
    assert hashes(home) == before


def test_a_lost_key_file_is_refused_not_replaced(tmp_path, export):
    home = tmp_path / "home"
    first = ingest(home, export)
    assert first.returncode == 0, first.stderr
    key_file = home / "secrets" / "id_hash.key"
    assert key_file.exists()
    before = hashes(home)
    key_file.unlink()

    lost = ingest(home, export)
    assert lost.returncode == 2, lost.stdout + lost.stderr
    message = " ".join(lost.stderr.split())
    assert "secrets/id_hash.key" in message and "YIWANG_ID_HASH_KEY" in message and "--rekey" in message
    assert not key_file.exists(), "a new key was generated for a home holding hashed IDs"
    assert hashes(home) == before

    # The library refuses too: settings.hash_key() never makes a new key for such a home.
    with pytest.raises(ConfigError, match="id_hash.key"):
        load_settings(home=home).hash_key()


def test_rekey_replaces_the_key_on_purpose_and_says_so(tmp_path, export):
    home = tmp_path / "home"
    assert ingest(home, export, key="old-key").returncode == 0
    before = hashes(home)

    rekeyed = ingest(home, export, "--rekey", "--json", key="new-key")
    assert rekeyed.returncode == 0, rekeyed.stderr
    assert "re-key" in " ".join(rekeyed.stderr.split()).lower()
    after = hashes(home)
    assert set(after) == set(before) and all(after.values())
    assert all(after[p] != before[p] for p in before)

    # The new key is now the store's: a plain ingest with it changes nothing, the old one is refused.
    same = ingest(home, export, "--json", key="new-key")
    assert same.returncode == 0, same.stderr
    assert '"unchanged": 3' in same.stdout
    assert ingest(home, export, key="old-key").returncode == 2

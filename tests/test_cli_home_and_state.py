"""The CLI's edge around the store home, an empty store, unknown subjects and the server's port (issue 10, item 14).

Every case runs the real entry point; the server cases run `yiwang serve` as a real process.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from cities import mini_city
from data.registry import scan_table
from taggers.store import read_tags
from testsupport.cli import run_in_process as _cli

YIWANG = [str(Path(sys.executable).parent / "yiwang")]


@pytest.mark.parametrize("command", [["keys", "list"], ["profile"], ["ingest", "/nonexistent-export"]])
def test_home_that_is_a_file_is_refused_by_name(tmp_path, monkeypatch, capsys, command):
    not_a_dir = tmp_path / "passwd"
    not_a_dir.write_text("root:x:0:0::/root:/bin/sh\n")
    code, _, err = _cli(monkeypatch, capsys, "--home", str(not_a_dir), *command)
    assert code == 2, err
    assert "Traceback" not in err
    assert str(not_a_dir) in err and "not a directory" in err


def test_home_that_cannot_be_created_is_refused_by_name(monkeypatch, capsys):
    code, _, err = _cli(monkeypatch, capsys, "--home", "/proc/nope", "keys", "list")
    assert code == 2, err
    assert "Traceback" not in err
    assert "/proc/nope" in err and "cannot create" in err


@pytest.mark.parametrize("command", [
    ["profile"], ["profile", "--tag"], ["tag"], ["alerts", "--as-of", "2026-06-30"], ["deliver"], ["tags", "P0000001"],
    ["train"], ["recommend"], ["feed", "P0000001"], ["quarantine"], ["profile-show", "P0000001"], ["models"],
    ["feeds"], ["feeds", "rollback"], ["run", "--as-of", "2026-06-30"],
])
def test_commands_that_need_data_refuse_a_mistyped_home_without_creating_it(tmp_path, monkeypatch, capsys, command):
    typo = tmp_path / "yiwnag-home"
    code, out, err = _cli(monkeypatch, capsys, "--home", str(typo), *command)
    assert code == 5, (out, err)
    assert "Traceback" not in err
    assert "no data ingested" in err and str(typo) in err and "yiwang ingest" in err
    assert not typo.exists(), "a command that needs data must not create the home it was pointed at"


@pytest.mark.parametrize("command", [["profile"], ["tag"], ["alerts", "--as-of", "2026-06-30"], ["deliver"]])
def test_commands_that_need_data_refuse_an_existing_but_empty_store(tmp_path, monkeypatch, capsys, command):
    home = tmp_path / "home"
    assert _cli(monkeypatch, capsys, "--home", str(home), "keys", "list")[0] == 0  # creates the store, no data
    code, out, err = _cli(monkeypatch, capsys, "--home", str(home), *command)
    assert code == 5, (out, err)
    assert "no data ingested" in err and "yiwang ingest" in err


def test_commands_that_need_no_data_still_work_on_a_new_home(tmp_path, monkeypatch, capsys):
    home = tmp_path / "new-home"
    assert _cli(monkeypatch, capsys, "--home", str(home), "keys", "list", "--json")[0] == 0
    assert _cli(monkeypatch, capsys, "--home", str(tmp_path / "h2"), "tag", "--check", "--json")[0] == 0
    assert _cli(monkeypatch, capsys, "--home", str(tmp_path / "h3"), "--help")[0] == 0
    code, _, err = _cli(monkeypatch, capsys, "--home", str(tmp_path / "h4"), "synth", "--out", str(tmp_path / "city"),
                        "--people", "60", "--enterprises", "6", "--as-of", "2026-06-30", "--json")
    assert code == 0, err
    code, _, err = _cli(monkeypatch, capsys, "--home", str(tmp_path / "h5"), "ingest", str(tmp_path / "city" / "export"),
                        "--as-of", "2026-06-30", "--json")
    assert code == 0, err
    # ... and once something is ingested, the data commands run.
    code, _, err = _cli(monkeypatch, capsys, "--home", str(tmp_path / "h5"), "profile", "--as-of", "2026-06-30", "--json")
    assert code == 0, err


@pytest.fixture(scope="module")
def city_home(tmp_path_factory):
    """A store with a small city ingested, profiled and tagged."""
    from profiler import build_profiles
    from taggers import run_taggers
    from data.settings import load_settings
    from yiwang.migrations import open_db

    base = tmp_path_factory.mktemp("city")
    settings = load_settings(home=base / "home")
    db = open_db(settings.db_path)
    city = mini_city(settings, db)
    build_profiles(settings, db, city["as_of"])
    run_taggers(settings, db, city["as_of"])
    db.conn.close()
    return settings.home, city


def test_tags_of_a_subject_the_store_does_not_know_is_not_found(city_home, monkeypatch, capsys):
    home, _ = city_home
    code, out, err = _cli(monkeypatch, capsys, "--home", str(home), "tags", "P9999999")
    assert code == 3, (out, err)
    assert "P9999999" in err and "Traceback" not in err


def test_tags_of_a_known_subject_without_tags_is_still_listed(city_home, monkeypatch, capsys):
    home, city = city_home
    from yiwang.migrations import open_db

    db = open_db(home / "yiwang.db")
    tags = read_tags(db)
    people = scan_table(home, "people").select("person_id").collect()
    untagged = people.filter(~pl.col("person_id").is_in(tags["subject_id"].implode())).head(1).rows()
    untagged = untagged[0] if untagged else None
    tagged = tags["subject_id"][0]
    db.conn.close()
    code, out, err = _cli(monkeypatch, capsys, "--home", str(home), "tags", tagged, "--json")
    assert code == 0, err
    assert json.loads(out)["tags"]
    if untagged is not None:
        code, out, err = _cli(monkeypatch, capsys, "--home", str(home), "tags", untagged[0], "--json")
        assert code == 0, err
        assert json.loads(out)["tags"] == []


def _serve(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*YIWANG, "--home", str(home), "serve", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("port", ["99999", "-1", "65536"])
def test_serve_refuses_a_port_out_of_range(tmp_path, port):
    proc = _serve(tmp_path / "home", "--port", port)
    assert proc.returncode == 2, proc.stderr
    assert "--port" in proc.stderr and "Traceback" not in proc.stderr


def test_serve_on_a_port_in_use_says_so(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _serve(tmp_path / "home", "--port", str(port))
    assert proc.returncode == 5, (proc.returncode, proc.stderr)
    assert f"port {port}" in proc.stderr and "in use" in proc.stderr
    assert "Traceback" not in proc.stderr

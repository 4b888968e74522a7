"""The store is private to its user (issue 10, item 9): with the usual umask 022, a home made by `yiwang`
holds only 0600 files and 0700 directories (database, WAL/SHM, snapshots, event log, profiles, tags, models,
feeds, secrets), whatever stage created them."""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
AS_OF = "2026-11-20"


def yiwang(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The real CLI in a fresh process started with umask 022 (what most login shells set)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("YIWANG_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    cmd = " ".join(shlex.quote(a) for a in (sys.executable, "-c", "from yiwang.cli import main; main()", *args))
    return subprocess.run(["sh", "-c", f"umask 022; exec {cmd}"], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def test_a_home_made_under_umask_022_is_private(tmp_path):
    home = tmp_path / "home"
    made = yiwang("synth", "--out", str(tmp_path / "city"), "--people", "200", "--enterprises", "20",
                  "--as-of", AS_OF, "--events-per-person", "5", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    ran = yiwang("--home", str(home), "run", "--export", str(tmp_path / "city" / "export"), "--as-of", AS_OF,
                 "--train", "always", cwd=tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr

    seen = {p.relative_to(home).as_posix() for p in home.rglob("*")}
    for expected in ("yiwang.db", "secrets/id_hash.key", "snapshots/people.parquet", "events"):
        assert expected in seen, sorted(seen)
    assert any(name.startswith("models/") for name in seen), sorted(seen)
    loose = {
        path.relative_to(home).as_posix(): oct(stat.S_IMODE(path.lstat().st_mode))
        for path in [home, *home.rglob("*")]
        if stat.S_IMODE(path.lstat().st_mode) != (0o700 if path.is_dir() else 0o600)
    }
    assert loose == {}


def test_wal_and_shm_are_private_while_the_store_is_open(tmp_path):
    script = (
        "import os, stat, sys; from pathlib import Path; from yiwang.migrations import open_db; "
        "db = open_db(Path(sys.argv[1]) / 'yiwang.db'); db.conn.execute('CREATE TABLE t (x)'); "
        "print(' '.join(f'{p.name}={oct(stat.S_IMODE(p.stat().st_mode))}' "
        "for p in sorted(Path(sys.argv[1]).iterdir())))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = " ".join(shlex.quote(a) for a in (sys.executable, "-c", script, str(tmp_path / "h")))
    done = subprocess.run(["sh", "-c", f"umask 022; exec {cmd}"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["yiwang.db=0o600", "yiwang.db-shm=0o600", "yiwang.db-wal=0o600"]
    assert stat.S_IMODE((tmp_path / "h").stat().st_mode) == 0o700

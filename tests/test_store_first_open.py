"""First open of a fresh store by several processes at once (issue 10, item 10).

Switching a new file to WAL takes an exclusive lock, and SQLite may answer "database is locked" to the
losers without calling the busy handler. Real processes released together by a barrier open one fresh
store per round; every open must succeed and every migration be recorded once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

_RACE = textwrap.dedent(
    """
    import json, multiprocessing as mp, sqlite3, sys, traceback
    from pathlib import Path
    from yiwang.migrations import all_migrations, open_db

    def opener(path, barrier, out):
        try:
            barrier.wait()
            open_db(Path(path)).conn.close()
            out.put(None)
        except Exception:
            out.put(traceback.format_exc().strip().splitlines()[-1])

    if __name__ == "__main__":
        base, processes, rounds = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
        ctx = mp.get_context("fork")
        failures, miscounts = [], []
        expected = len(all_migrations())
        for r in range(rounds):
            db = base / f"round{r}" / "yiwang.db"
            barrier, out = ctx.Barrier(processes), ctx.Queue()
            procs = [ctx.Process(target=opener, args=(str(db), barrier, out)) for _ in range(processes)]
            for p in procs:
                p.start()
            errors = [e for e in (out.get() for _ in procs) if e]
            for p in procs:
                p.join()
            failures += [f"round {r}: {e}" for e in errors]
            n = sqlite3.connect(db).execute("SELECT count(*) FROM _migrations").fetchone()[0]
            if n != expected:
                miscounts.append(f"round {r}: {n} migrations recorded, expected {expected}")
        print(json.dumps({"failures": failures, "miscounts": miscounts}))
    """
)


def _race(tmp_path: Path, processes: int, rounds: int) -> dict:
    script = tmp_path / "first_open_race.py"
    script.write_text(_RACE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path), str(processes), str(rounds)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_processes_opening_a_fresh_store_together_all_succeed(tmp_path):
    result = _race(tmp_path, processes=8, rounds=50)
    assert result == {"failures": [], "miscounts": []}


@pytest.mark.slow
def test_two_hundred_concurrent_first_opens(tmp_path):
    result = _race(tmp_path, processes=8, rounds=200)
    assert result == {"failures": [], "miscounts": []}

"""Kill -9 the alert engine and the sender at random points, restarting each time, against a flaky receiver.

    .venv/bin/python benchmarks/kill9_alerts.py [--kills 50] [--people 2000] [--fail 0.3] [--hang 0.05]

What it does: builds a small city in a fresh home, with every subject accepting in-app and webhook; then runs
`yiwang alerts --as-of D` over a sequence of dates and `yiwang deliver` in between, as real processes, and sends
SIGKILL to a random one at a random moment of its run (``--kills`` times), restarting the interrupted step each
time. The webhook receiver (127.0.0.1, in this process) fails ``--fail`` of calls with 503 and hangs on ``--hang``
of them past the sender's timeout. At the end it runs delivery to completion and checks:

- zero lost alerts: the outbox holds exactly the alert keys an uninterrupted run on a copy of the city produces;
- zero duplicates: one outbox row per (rule, subject, object, stage);
- every webhook repeat carries the same idempotency key (one key per alert, one alert per key);
- every current alert ends delivered or dead-lettered on the webhook, and is in the portal's in-app list.

Prints the figures and writes benchmarks/out/kill9.json. Exit status 1 if any check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import polars as pl  # noqa: E402

from notifier.engine import evaluate_alerts  # noqa: E402
from notifier.outbox import (  # noqa: E402
    stored_alerts, stored_attempts, stored_dead_letters, stored_deliveries,
)
from testsupport.webhook_receiver import Receiver  # noqa: E402
from testsupport.registries import load_into_store, population  # noqa: E402
from data.citizen import write_preferences  # noqa: E402
from data.settings import load_settings  # noqa: E402
from yiwang.migrations import open_db  # noqa: E402

YIWANG = Path(sys.executable).parent / "yiwang"
START = date(2026, 3, 2)


def _env(url: str, timeout_s: float, max_attempts: int) -> dict[str, str]:
    return {
        "YIWANG_ID_HASH_KEY": "kill9",
        "YIWANG_WEBHOOK_URL": url,
        "YIWANG_WEBHOOK_TIMEOUT_S": str(timeout_s),
        "YIWANG_WEBHOOK_BACKOFF_BASE_S": "0.05",
        "YIWANG_WEBHOOK_MAX_ATTEMPTS": str(max_attempts),
        "YIWANG_QUIET_HOURS": "00:00-00:00",  # the kill test runs whatever the hour
        "YIWANG_DAILY_ALERT_CAP": "100000",  # every alert is released at once: the cap has its own tests
    }


def _settings(home: Path, env: dict[str, str]):
    return load_settings(home=home, **{k.removeprefix("YIWANG_").lower(): v for k, v in env.items()})


def _build_city(home: Path, env: dict[str, str], people: int, seed: int) -> None:
    settings = _settings(home, env)
    db = open_db(settings.db_path)
    frames = population(people, 3.0, START, seed=seed)
    load_into_store(settings, db, frames)
    subjects = frames["people"]["person_id"].to_list() + frames["enterprises"]["enterprise_id"].to_list()
    for s in subjects:
        write_preferences(db.conn, s, True, ["in_app", "webhook"])
    db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.conn.close()


def _keys(db) -> list[tuple]:
    return stored_alerts(db.conn).select("rule_id", "subject_id", "object_id", "stage").rows()


def _step(home: Path, env: dict[str, str], step: tuple[str, str | None], kill_after: float | None) -> tuple[bool, float]:
    """Run one step as a process; SIGKILL it after kill_after seconds if still running. Returns (finished, secs)."""
    cmd, arg = step
    argv = [str(YIWANG), "--home", str(home), cmd] + (["--as-of", arg] if arg else [])
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        _, err_bytes = proc.communicate(timeout=kill_after)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
        return False, time.monotonic() - t0
    err = err_bytes.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {err[-2000:]}")
    return True, time.monotonic() - t0


def run(kills: int = 50, people: int = 2000, dates: int = 6, fail: float = 0.3, hang: float = 0.05,
        timeout_s: float = 0.3, max_attempts: int = 4, seed: int = 1, workdir: Path | None = None,
        log=print) -> dict:
    rng = random.Random(seed)
    work = Path(workdir or tempfile.mkdtemp(prefix="kill9-"))
    home, ref_home = work / "home", work / "reference"
    t_start = time.monotonic()
    with Receiver(fail_rate=fail, hang_rate=hang, hang_s=timeout_s * 4, seed=seed) as receiver:
        env = _env(receiver.url, timeout_s, max_attempts)
        _build_city(home, env, people, seed)
        shutil.copytree(home, ref_home)
        as_of_dates = [(START + timedelta(days=9 * k)).isoformat() for k in range(dates)]

        # The truth: the same evaluations, uninterrupted, on a copy.
        ref_settings = _settings(ref_home, env)
        ref_db = open_db(ref_settings.db_path)
        for d in as_of_dates:
            evaluate_alerts(ref_settings, ref_db, date.fromisoformat(d))
        expected = set(_keys(ref_db))
        ref_db.conn.close()

        plan: list[tuple[str, str | None]] = []
        for d in as_of_dates:
            plan += [("alerts", d), ("deliver", None)]
        # Process start-up (interpreter, imports) is the same for every command; kill points are drawn after it,
        # inside the evaluation or delivery work, where a crash can do harm.
        t = time.monotonic()
        subprocess.run([str(YIWANG), "--home", str(home), "alerts", "--help"], env={**os.environ, **env},
                       capture_output=True, check=True)
        startup = time.monotonic() - t
        typical = {"alerts": None, "deliver": None}
        killed = Counter()
        finished_runs = Counter()
        done_kills = 0
        i = 0
        # A kill point is drawn inside a typical run of its step; should runs keep ending before it (the machine
        # sped up), the plan would grow for ever: give up loudly instead.
        max_steps = len(plan) + 20 * kills + 20
        steps = 0
        while i < len(plan):
            steps += 1
            if steps > max_steps:
                raise RuntimeError(f"only {done_kills} of {kills} kills landed in {max_steps} steps")
            step = plan[i]
            kill_now = done_kills < kills and rng.random() < 0.8
            kill_after = None
            if kill_now:
                # Kill somewhere inside the work of a typical run of this step, once we know its length.
                span = typical[step[0]] or startup + 2.0
                kill_after = startup + rng.uniform(0.0, 1.0) * max(span - startup, 0.2)
            finished, secs = _step(home, env, step, kill_after)
            if finished:
                finished_runs[step[0]] += 1
                typical[step[0]] = max(typical[step[0]] or 0.0, secs)
                i += 1
            else:
                killed[step[0]] += 1
                done_kills += 1
                log(f"kill {done_kills:>3}: {step[0]} {step[1] or ''} after {secs:.2f}s")
            # When the plan is over but kills remain, add more rounds: a re-evaluation of the last date (which
            # must add nothing) and a delivery, so kills keep landing in both kinds of work.
            if i == len(plan) and done_kills < kills:
                plan += [("alerts", as_of_dates[-1]), ("deliver", None)]

        # Drain: deliver until no webhook is pending (backoff is short), with no more kills.
        settings = _settings(home, env)
        for _ in range(200):
            _step(home, env, ("deliver", None), None)
            db = open_db(settings.db_path)
            pending = stored_deliveries(db.conn).filter(pl.col("status") == "pending").height
            unreleased = stored_alerts(db.conn).filter(
                (pl.col("status") == "pending") & pl.col("released_on").is_null()).height
            db.conn.close()
            if pending == 0 and unreleased == 0:
                break
            time.sleep(0.3)
        # Requests whose body a kill cut short were rejected (400) and carried no alert; they are counted apart.
        truncated = sum(1 for r in receiver.requests if not r["complete"])
        requests = [r for r in receiver.requests if r["complete"]]

    db = open_db(settings.db_path)
    got = _keys(db)
    alerts = stored_alerts(db.conn).with_columns(pl.col("alert_id").cast(pl.Int64))
    deliveries = stored_deliveries(db.conn).with_columns(pl.col("alert_id").cast(pl.Int64),
                                                         pl.col("channel").cast(pl.String))
    webhook = deliveries.filter(pl.col("channel") == "webhook")
    alert_status = Counter(alerts["status"].to_list())
    webhook_status = Counter(webhook["status"].to_list())
    keys_by_alert = dict(webhook.select("alert_id", "idempotency_key").rows())
    current = (
        alerts.filter(~pl.col("status").is_in(["superseded", "cancelled", "resolved"]))
        .select("alert_id", pl.col("channels").str.contains('"webhook"', literal=True).cast(pl.Int64).alias("wants"))
        .join(webhook.select("alert_id", pl.col("status").alias("w")), on="alert_id", how="left")
        .join(deliveries.filter(pl.col("channel") == "in_app").select("alert_id", pl.col("status").alias("a")),
              on="alert_id", how="left")
        .rows()
    )
    dead_letters = stored_dead_letters(db.conn).height
    unfinished_attempts = stored_attempts(db.conn).filter(pl.col("finished_at").is_null()).height
    db.conn.close()

    alerts_per_key: dict[str, set] = defaultdict(set)
    keys_per_alert: dict[int, set] = defaultdict(set)
    for r in requests:
        alerts_per_key[r["key"]].add(r["alert_id"])
        keys_per_alert[r["alert_id"]].add(r["key"])
    per_key = Counter(r["key"] for r in requests)
    delivered_keys = {keys_by_alert[a] for a, _, w, _ in current if w == "delivered"}
    checks = {
        "zero_lost": set(got) >= expected,
        "zero_extra": set(got) <= expected,
        "zero_duplicates": len(got) == len(set(got)),
        "header_key_equals_payload_key": all(r["key"] == r["payload_key"] for r in requests),
        "one_key_per_alert": all(len(v) == 1 for v in keys_per_alert.values()),
        "one_alert_per_key": all(len(v) == 1 for v in alerts_per_key.values()),
        "keys_match_outbox": all(keys_by_alert.get(a) in ks for a, ks in keys_per_alert.items()),
        # Rules whose channels include the webhook (in-app-only rules have no webhook row by design).
        "every_current_alert_delivered_or_dead": all(
            (w in ("delivered", "dead")) if has_hook else w is None for _, has_hook, w, _ in current
        ),
        "every_current_alert_in_app": all(a == "delivered" for _, _, _, a in current),
        "every_delivered_webhook_reached_receiver": delivered_keys <= set(per_key),
        "dead_letters_match": dead_letters == webhook_status.get("dead", 0),
    }
    result = {
        "kills": sum(killed.values()),
        "startup_s": round(startup, 2),
        "killed_during": dict(killed),
        "completed_runs": dict(finished_runs),
        "people": people,
        "as_of_dates": as_of_dates,
        "receiver": {"fail_rate": fail, "hang_rate": hang, "timeout_s": timeout_s, "max_attempts": max_attempts},
        "alerts_expected": len(expected),
        "alerts_in_outbox": len(got),
        "alert_status": dict(alert_status),
        "webhook_status": dict(webhook_status),
        "webhook_requests": len(requests),
        "requests_cut_by_kill": truncated,
        "webhook_keys": len(per_key),
        "keys_sent_more_than_once": sum(1 for n in per_key.values() if n > 1),
        "max_sends_of_one_key": max(per_key.values(), default=0),
        "dead_letters": dead_letters,
        "attempts_cut_by_kill": unfinished_attempts,
        "checks": checks,
        "ok": all(checks.values()),
        "seconds": round(time.monotonic() - t_start, 1),
    }
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=50)
    ap.add_argument("--people", type=int, default=2000)
    ap.add_argument("--dates", type=int, default=6, help="evaluation dates, 9 days apart")
    ap.add_argument("--fail", type=float, default=0.3)
    ap.add_argument("--hang", type=float, default=0.05)
    ap.add_argument("--timeout", type=float, default=0.3, help="the sender's webhook timeout (s)")
    ap.add_argument("--max-attempts", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "kill9.json")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kill9-"))
    try:
        result = run(args.kills, args.people, args.dates, args.fail, args.hang, args.timeout, args.max_attempts,
                     args.seed, workdir=work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(result, indent=2, ensure_ascii=False))
    print(f"\nkill9: {'OK' if result['ok'] else 'FAILED'} — {result['kills']} kills, {result['alerts_in_outbox']} alerts, "
          f"{result['webhook_requests']} webhook calls for {result['webhook_keys']} keys, "
          f"{result['dead_letters']} dead letters; written to {args.out}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

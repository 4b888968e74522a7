"""Crash safety: kill -9 during evaluation and delivery, restart, and check nothing is lost, duplicated or sent
under a second idempotency key, against a receiver that fails 30% and hangs 5% (benchmarks/kill9_alerts.py).
The default run does a few kills on a small city; the full 50-kill run is marked slow."""

from __future__ import annotations

import importlib.util

import pytest

from data.settings import REPO_ROOT


@pytest.fixture(scope="module")
def kill9():
    spec = importlib.util.spec_from_file_location("kill9_alerts", REPO_ROOT / "benchmarks" / "kill9_alerts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check(result, kills):
    assert result["kills"] == kills
    failed = [name for name, ok in result["checks"].items() if not ok]
    assert failed == [], result
    assert result["alerts_in_outbox"] == result["alerts_expected"] > 0
    assert result["webhook_requests"] >= result["webhook_keys"] > 0


def test_a_few_kills_lose_and_duplicate_nothing(kill9, tmp_path):
    _check(kill9.run(kills=3, people=200, dates=1, max_attempts=2, workdir=tmp_path, log=lambda *_: None), 3)


@pytest.mark.slow
def test_fifty_kills(kill9, tmp_path):
    _check(kill9.run(kills=50, people=2000, dates=6, workdir=tmp_path, log=lambda *_: None), 50)

"""One-user-per-line sequence files (`user item1 item2 ...`, the S3Rec/ICLRec format) through the harness."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recommender.interactions import load_interactions
from recommender.splits import leave_last_out
from data.errors import ContractError

YIWANG = Path(sys.executable).parent / "yiwang"


def write_sequences(path: Path, n_users=60, seed=0, equal_length=False) -> dict[str, list[str]]:
    rng = np.random.default_rng(seed)
    seqs = {}
    for u in range(1, n_users + 1):
        base = 0 if u % 2 else 10
        n = 6 if equal_length else int(rng.integers(4, 9))
        seqs[str(u)] = [str(base + int(i)) for i in rng.choice(10, n, replace=False)]
    path.write_text("".join(f"{u} {' '.join(items)}\n" for u, items in seqs.items()))
    return seqs


def test_sequences_are_read_in_line_order(tmp_path):
    p = tmp_path / "Beauty.txt"
    seqs = write_sequences(p)
    explicit = load_interactions(p, format="sequences")
    detected = load_interactions(p)  # ragged lines: recognised as sequences
    assert detected.format == "sequences" and detected.frame.equals(explicit.frame)
    assert explicit.frame.height == sum(len(s) for s in seqs.values())
    split = leave_last_out(explicit.frame)
    last = dict(split.test.select("subject_id", "item_id").iter_rows())
    assert last == {u: s[-1] for u, s in seqs.items()}
    second = dict(split.valid.select("subject_id", "item_id").iter_rows())
    assert second == {u: s[-2] for u, s in seqs.items()}


def test_equal_length_sequences_without_format_get_a_clear_message(tmp_path):
    p = tmp_path / "seq.txt"
    write_sequences(p, equal_length=True)
    with pytest.raises(ContractError, match=r"seq.txt: .*one line.*--format sequences"):
        load_interactions(p, header=False)
    assert load_interactions(p, format="sequences").frame.height == 60 * 6


def test_sequence_file_errors(tmp_path):
    p = tmp_path / "seq.txt"
    p.write_text("1 a b c\n2\n3 a c\n")
    li = load_interactions(p, format="sequences")
    assert li.skips.get("single-interaction users") == 1 or li.skips.get("lines with a user and no item") == 1
    with pytest.raises(ContractError, match="rating"):
        load_interactions(p, format="sequences", min_rating=3)
    with pytest.raises(ContractError, match="format"):
        load_interactions(p, format="basket")


def test_cli_leave_last_out_on_a_sequence_file(tmp_path):
    p = tmp_path / "Beauty.txt"
    write_sequences(p)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    r = subprocess.run([str(YIWANG), "eval", "--interactions", str(p), "--format", "sequences", "--protocol",
                        "leave-last-out", "--models", "ease,pop", "--k", "5", "--out", "res", "--json"],
                       capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert '"system": "ease"' in r.stdout and "sequences" in r.stdout


def test_cli_detects_a_sequence_file_and_says_so(tmp_path):
    p = tmp_path / "Beauty.txt"
    write_sequences(p)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    r = subprocess.run([str(YIWANG), "eval", "--interactions", str(p), "--protocol", "leave-last-out", "--models",
                        "pop", "--k", "5", "--out", "res"], capture_output=True, text=True, cwd=tmp_path, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "read as sequences" in r.stdout and "detected from lines of different lengths" in r.stdout

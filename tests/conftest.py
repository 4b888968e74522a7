"""Shared fixtures: a throwaway yiwang home with its store, and the shared datasets folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from data.settings import load_settings  # noqa: E402
from yiwang.migrations import open_db  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = REPO_ROOT.parent / "shared"


@pytest.fixture
def settings(tmp_path):
    """Settings pointing at a fresh home under tmp_path, with a fixed ID-hash key."""
    return load_settings(home=tmp_path / "home", id_hash_key="test-key")


@pytest.fixture
def db(settings):
    """A migrated store in the fresh home."""
    d = open_db(settings.db_path)
    yield d
    d.conn.close()


@pytest.fixture
def ml100k_dir():
    """../shared/datasets/ml-100k, or skip where it is absent (never copied into the project)."""
    path = SHARED / "datasets" / "ml-100k"
    if not (path / "u.data").exists():
        pytest.skip("../shared/datasets/ml-100k is absent")
    return path

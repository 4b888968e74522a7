"""Store connections for the API: a small pool, one connection checked out per request.

Sync routes run on the threadpool while dependencies may run elsewhere, so a connection is handed to one
request at a time rather than bound to a thread; WAL lets these readers proceed while a batch publishes.
"""

from __future__ import annotations

import threading
from pathlib import Path

import sqlite_utils
from fastapi import Request

from data.store import connect
from yiwang.migrations import open_db


STATE_KEY = "yiwang_db"


class ConnectionPool:
    def __init__(self, db_path: Path):
        self.db_path = Path(db_path)
        self._idle: list[sqlite_utils.Database] = []
        self._all: list[sqlite_utils.Database] = []
        self._lock = threading.Lock()
        self._closed = False

    def migrate(self) -> None:
        """Bring the schema up to date once, before serving."""
        open_db(self.db_path).conn.close()

    def acquire(self) -> sqlite_utils.Database:
        with self._lock:
            if self._closed:
                raise RuntimeError("connection pool closed")
            if self._idle:
                return self._idle.pop()
        db = sqlite_utils.Database(connect(self.db_path))
        with self._lock:
            self._all.append(db)
        return db

    def release(self, db: sqlite_utils.Database) -> None:
        if db.conn.in_transaction:
            # A route that failed mid-write must not leak its open transaction to the next request.
            db.conn.rollback()
        with self._lock:
            if not self._closed:
                self._idle.append(db)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for db in self._all:
                db.conn.close()
            self._all.clear()
            self._idle.clear()


def request_db(request: Request) -> sqlite_utils.Database:
    """This request's connection: taken from the pool on first use, given back by the edge middleware."""
    state = request.scope.setdefault("state", {})
    db = state.get(STATE_KEY)
    if db is None:
        db = state[STATE_KEY] = request.app.state.pool.acquire()
    return db


async def get_db(request: Request) -> sqlite_utils.Database:
    """FastAPI dependency: a store connection for this request only.

    A plain function rather than a yield dependency: FastAPI's dependency machinery was the largest cost of
    the feed route, and the middleware returns the connection once the response is out.
    """
    return request_db(request)

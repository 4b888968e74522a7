import sqlite3
import threading

from yiwang.migrations import all_migrations, apply_migrations, open_db


def test_migrations_apply_once_and_are_recorded(settings):
    db = open_db(settings.db_path)
    names = [n for n, _ in all_migrations()]
    recorded = [r["name"] for r in db.query("SELECT name FROM _migrations ORDER BY rowid")]
    assert recorded == names
    assert apply_migrations(db) == []
    assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_concurrent_first_open_does_not_double_apply(settings):
    errors = []

    def opener():
        try:
            open_db(settings.db_path).conn.close()
        except Exception as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    conn = sqlite3.connect(settings.db_path)
    count = conn.execute("SELECT count(*) FROM _migrations").fetchone()[0]
    assert count == len(all_migrations())

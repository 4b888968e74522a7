"""`yiwang keys` and `yiwang serve` as an operator runs them: real processes, a real port on loopback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from testsupport.cli import run_in_process as _cli

YIWANG = [str(Path(sys.executable).parent / "yiwang")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_keys_create_list_revoke(tmp_path, monkeypatch, capsys):
    home = str(tmp_path / "home")
    code, out, err = _cli(monkeypatch, capsys, "--home", home, "keys", "create", "--name", "portal-backend",
                          "--scope", "feed:read", "--scope", "events:write", "--json")
    assert code == 0, err
    record = json.loads(out)
    assert record["scopes"] == ["events:write", "feed:read"] and record["key"].startswith("yw_")
    listed = json.loads(_cli(monkeypatch, capsys, "--home", home, "keys", "list", "--json")[1])
    assert [k["key_id"] for k in listed] == [record["key_id"]]
    assert record["key"] not in json.dumps(listed)
    assert _cli(monkeypatch, capsys, "--home", home, "keys", "revoke", record["key_id"])[0] == 0
    assert json.loads(_cli(monkeypatch, capsys, "--home", home, "keys", "list", "--json")[1])[0]["revoked_at"]
    code, _, err = _cli(monkeypatch, capsys, "--home", home, "keys", "revoke", record["key_id"])
    assert code == 5 and "already revoked" in err
    assert _cli(monkeypatch, capsys, "--home", home, "keys", "revoke", "nope")[0] == 3
    code, _, err = _cli(monkeypatch, capsys, "--home", home, "keys", "create", "--name", "x", "--scope", "feed:write")
    assert code == 2 and "unknown scope" in err


def test_serve_answers_on_loopback_and_stops_on_sigint(tmp_path):
    home = tmp_path / "home"
    from yiwang.api.keys import create_key
    from yiwang.migrations import open_db

    db = open_db(home / "yiwang.db")
    key = create_key(db, "t", ["feed:read"])[1]
    db.conn.close()
    port = _free_port()
    env = {**os.environ, "YIWANG_ID_HASH_KEY": "test-key"}
    proc = subprocess.Popen([*YIWANG, "--home", str(home), "serve", "--port", str(port), "--log-level", "warning"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.1)
        resp = httpx.get(f"{base}/v1/subjects/P0000001/preferences", headers={"Authorization": f"Bearer {key}"})
        assert resp.status_code == 200
        assert httpx.get(f"{base}/v1/subjects/P0000001/preferences").status_code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    assert proc.returncode == 0, err.decode()
    # No access log: paths carry subject ids.
    assert b"P0000001" not in out + err

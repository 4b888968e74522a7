"""A local webhook receiver (an SMS/e-mail gateway stand-in) for tests, the kill -9 script and manual trials.

It is a real HTTP server on 127.0.0.1 that records every POST (idempotency key, alert id, attempt header) and
answers per a plan: a scripted list of status codes, and/or random failures and hangs at given rates.
Run it by hand with ``python -m testsupport.webhook_receiver --port 8765 --fail 0.3 --hang 0.05``.
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class Receiver:
    """Start with ``with Receiver(...) as r:``; ``r.url`` takes POSTs, ``r.requests`` lists what arrived."""

    def __init__(self, fail_rate: float = 0.0, hang_rate: float = 0.0, hang_s: float = 5.0,
                 script: list[int] | None = None, seed: int | None = None, log_path: Path | None = None,
                 port: int = 0):
        self.fail_rate, self.hang_rate, self.hang_s = fail_rate, hang_rate, hang_s
        self.script = list(script or [])
        self.rng = random.Random(seed)
        self.log_path = Path(log_path) if log_path else None
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                expected = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(expected)
                try:
                    payload = json.loads(body)
                except ValueError:
                    payload = None
                # A sender killed mid-request leaves a cut body: a real gateway rejects it, and so do we.
                complete = len(body) == expected and isinstance(payload, dict)
                status, hang = receiver._decide() if complete else (400, False)
                record = {
                    "key": self.headers.get("Idempotency-Key"),
                    "attempt": self.headers.get("X-Yiwang-Attempt"),
                    "alert_id": (payload or {}).get("alert_id"),
                    "payload_key": (payload or {}).get("idempotency_key"),
                    "status": "hang" if hang else status,
                    "complete": complete,
                    "at": time.time(),
                }
                receiver._record(record)
                if hang:
                    receiver._stop.wait(receiver.hang_s)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(b'{"ok": %s}' % (b"true" if status < 300 else b"false"))
                except OSError:
                    pass  # the sender gave up (timeout) before we answered

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="webhook-receiver", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/hook"

    def _decide(self) -> tuple[int, bool]:
        with self.lock:
            if self.script:
                return self.script.pop(0), False
            r = self.rng.random()
        if r < self.hang_rate:
            return 200, True
        if r < self.hang_rate + self.fail_rate:
            return 503, False
        return 200, False

    def _record(self, record: dict) -> None:
        with self.lock:
            self.requests.append(record)
            if self.log_path:
                with self.log_path.open("a") as f:
                    f.write(json.dumps(record) + "\n")

    def __enter__(self) -> "Receiver":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def main() -> None:
    ap = argparse.ArgumentParser(description="A local webhook receiver that records and sometimes fails or hangs.")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--fail", type=float, default=0.0, help="share of calls answered 503")
    ap.add_argument("--hang", type=float, default=0.0, help="share of calls that hang for --hang-s seconds")
    ap.add_argument("--hang-s", type=float, default=5.0)
    ap.add_argument("--log", type=Path, default=None, help="append each request as a JSON line here")
    args = ap.parse_args()
    with Receiver(args.fail, args.hang, args.hang_s, log_path=args.log, port=args.port) as r:
        print(f"listening on {r.url}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()

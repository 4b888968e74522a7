"""Run the app under a real uvicorn server in a background thread, on loopback (the API tests use it)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI


@contextmanager
def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 0, timeout_s: float = 20.0) -> Iterator[str]:
    """Start uvicorn on ``host`` (an ephemeral port by default), yield its base URL, stop it on exit."""
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, ws="none",
                            lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="yiwang-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(timeout_s)
            raise RuntimeError("the API server did not start")
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()
    try:
        yield f"http://{bound[0]}:{bound[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)


@contextmanager
def run_api(settings, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Build the app for ``settings`` and serve it on loopback for the duration of the block."""
    from yiwang.api.app import create_app

    with serve_in_thread(create_app(settings), host=host, port=port) as base_url:
        yield base_url

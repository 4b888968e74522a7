"""How the API is served: one uvicorn configuration for `yiwang serve` and for the tests' loopback server.

uvicorn answers malformed HTTP itself, before any ASGI app runs, with a text/plain 400; the protocol classes
here answer those in the API's one error shape instead. They also close a connection whose request headers
do not arrive within ``HEADER_TIMEOUT_S`` (uvicorn waits for them forever; its keep-alive timeout covers only
the idle time after a response). A body that stops arriving is the edge middleware's (a 400, then close).
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from yiwang.api.errors import error_body
from data.errors import ConfigError, StateError, YiwangError

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is optional in uvicorn; h11 is always there
    HttpToolsProtocol = None  # type: ignore[assignment,misc]


# Seconds from a connection's first byte (or its opening) until its request headers must be complete.
HEADER_TIMEOUT_S = 10.0


class _HeaderDeadline:
    """Mixed into a uvicorn HTTP protocol: close the connection if request headers take too long."""

    header_timeout_s = HEADER_TIMEOUT_S
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # type: ignore[misc]
        if self._awaiting_headers():
            self._arm_header_timer()
        elif self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def connection_lost(self, exc) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)  # type: ignore[misc]

    def _awaiting_headers(self) -> bool:
        # Between requests uvicorn holds the last, completed cycle; a new one starts once headers are parsed.
        cycle = self.cycle  # type: ignore[attr-defined]
        return cycle is None or cycle.response_complete

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)  # type: ignore[attr-defined]

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        transport = self.transport  # type: ignore[attr-defined]
        if self._awaiting_headers() and not transport.is_closing():
            transport.close()


def _json_400(msg: str) -> bytes:
    body = json.dumps(error_body("bad_request", msg or "invalid HTTP request", uuid.uuid4().hex)).encode()
    return (
        b"HTTP/1.1 400 Bad Request\r\n"
        b"content-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n"
        b"connection: close\r\n\r\n" + body
    )


class JsonErrorH11Protocol(_HeaderDeadline, H11Protocol):
    """uvicorn's h11 protocol, its parse-error 400 in the API's error shape, with a deadline for headers."""

    def send_400_response(self, msg: str) -> None:
        # h11's state machine is in ERROR here; the bytes go straight to the transport, then it closes.
        self.transport.write(_json_400(msg))
        self.transport.close()


if HttpToolsProtocol is not None:

    class JsonErrorHttpToolsProtocol(_HeaderDeadline, HttpToolsProtocol):  # type: ignore[valid-type,misc]
        """uvicorn's httptools protocol, its parse-error 400 in the API's error shape, with a deadline for headers."""

        def send_400_response(self, msg: str) -> None:
            self.transport.write(_json_400(msg))
            self.transport.close()

    HTTP_PROTOCOL: type = JsonErrorHttpToolsProtocol
else:  # pragma: no cover - httptools comes with uvicorn[standard]
    HTTP_PROTOCOL = JsonErrorH11Protocol


def server_config(app: FastAPI, host: str, port: int, log_level: str = "info",
                  http: type | None = None) -> uvicorn.Config:
    # No access log: request paths carry subject ids; the API's own metrics use route templates instead.
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False, ws="none",
                          lifespan="on", http=http or HTTP_PROTOCOL)


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port``; a port in use or an address that cannot be bound is said plainly."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host}: not an address this machine can listen on ({exc.strerror})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise StateError(f"port {port} on {host} is in use (another server running?): stop it or pass "
                             "another --port") from None
        raise ConfigError(f"cannot listen on {host} port {port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


def serve_forever(app: FastAPI, host: str, port: int, log_level: str = "info") -> None:
    """Serve until interrupted (`yiwang serve`); the logged address is the one actually bound."""
    sock = listening_socket(host, port)
    server = uvicorn.Server(server_config(app, host, port, log_level))
    # uvicorn names the address only when it binds the socket itself; this one is bound above.
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    logging.getLogger("uvicorn.error").info("listening on http://%s:%d (Ctrl-C to stop)", shown, bound_port)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        return  # uvicorn re-raises the Ctrl-C it shut down on; stopping is the normal end of serving
    except SystemExit as exc:
        # uvicorn exits 3 when the app's startup fails; 3 means "not found" to yiwang's callers.
        raise YiwangError(f"the API server did not start (exit {exc.code}; see the log above)") from None
    finally:
        sock.close()
    if not server.started:
        raise YiwangError("the API server did not start (see the log above)")


@contextmanager
def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 0, timeout_s: float = 20.0,
                    http: type | None = None) -> Iterator[str]:
    """Start uvicorn on ``host`` (an ephemeral port by default), yield its base URL, stop it on exit."""
    server = uvicorn.Server(server_config(app, host, port, log_level="warning", http=http))
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

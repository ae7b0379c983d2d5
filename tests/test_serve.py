"""The production server (``bridge.serve``) over real sockets: no client holds it.

Each test runs uvicorn with ``uvicorn_options(settings)`` on a free port and talks raw
HTTP/1.1 over a socket, so what is asserted is what the server answers or whether it
closed the connection, never how long it took: deadlines are set short (0.3 s) and
the client waits far longer (``WAIT``) for the server to act.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import Engine

from bridge.app import create_app
from bridge.core.settings import Settings
from bridge.serve import uvicorn_options
from tests.fixtures.pipeline import CONFIG, make_settings
from tests.fixtures.servers import run_asgi

WAIT = 10.0  # seconds a client waits for the server; only reached if a bound is missing
SHORT = 0.3
WEBHOOK_HEAD = (
    b"POST /webhooks/stripe HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/json\r\n"
)


class Server:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.address = (parts.hostname or "127.0.0.1", parts.port or 80)

    @contextmanager
    def connect(self) -> Iterator[socket.socket]:
        sock = socket.create_connection(self.address, timeout=WAIT)
        try:
            yield sock
        finally:
            sock.close()


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or resets it)."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def read_response(sock: socket.socket) -> bytes:
    """One response (head and a Content-Length body), leaving the connection open."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a response: {received!r}"
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, f"closed mid-body: {received + body!r}"
        body += chunk
    # The head and the whole body: the body may come in a later packet than the head.
    return head + b"\r\n\r\n" + body


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


@pytest.fixture
def settings_for(redis_url: str, database_url: str, tmp_path: Path) -> Any:
    config = tmp_path / "bridge.toml"
    config.write_text(CONFIG)

    def make(**limits: Any) -> Settings:
        return make_settings(
            database_url=database_url,
            redis_url=redis_url,
            sandbox_url="http://127.0.0.1:1/api/",
            config_path=config,
            **limits,
        )

    return make


@contextmanager
def serve(settings: Settings, engine: Engine) -> Iterator[Server]:
    with run_asgi(create_app(settings, engine=engine), **uvicorn_options(settings)) as url:
        yield Server(url)


def stored_events(engine: Engine) -> int:
    with engine.connect() as c:
        count: int = c.exec_driver_sql("SELECT count(*) FROM webhook_event").scalar_one()
    return count


class TestDeadlines:
    def test_a_slow_body_is_answered_408_and_closed(
        self, settings_for: Any, engine: Engine
    ) -> None:
        with (
            serve(settings_for(BRIDGE_BODY_TIMEOUT=SHORT), engine) as server,
            server.connect() as sock,
        ):
            sock.sendall(WEBHOOK_HEAD + b"Content-Length: 1000\r\n\r\n" + b'{"id": ')
            response = read_until_closed(sock)
        assert status_of(response) == 408
        assert stored_events(engine) == 0

    def test_a_slow_head_is_answered_408_and_closed(
        self, settings_for: Any, engine: Engine
    ) -> None:
        with (
            serve(settings_for(BRIDGE_HEADER_TIMEOUT=SHORT), engine) as server,
            server.connect() as sock,
        ):
            sock.sendall(WEBHOOK_HEAD + b"Content-Len")
            response = read_until_closed(sock)
        assert status_of(response) == 408

    def test_a_connection_that_sends_nothing_is_closed(
        self, settings_for: Any, engine: Engine
    ) -> None:
        settings = settings_for(BRIDGE_HEADER_TIMEOUT=SHORT)
        with serve(settings, engine) as server, server.connect() as sock:
            assert read_until_closed(sock) == b""

    def test_an_idle_keep_alive_connection_is_closed(
        self, settings_for: Any, engine: Engine
    ) -> None:
        settings = settings_for(BRIDGE_KEEP_ALIVE_TIMEOUT=SHORT)
        with serve(settings, engine) as server, server.connect() as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: bridge\r\n\r\n")
            assert status_of(read_response(sock)) == 200
            assert read_until_closed(sock) == b""

    def test_a_body_still_coming_after_its_answer_is_cut_off(
        self, settings_for: Any, engine: Engine
    ) -> None:
        # 413 from the Content-Length alone; the rest of the body, read and dropped, may
        # not keep the connection (closing at once would reset clients still sending).
        settings = settings_for(BRIDGE_BODY_TIMEOUT=SHORT, BRIDGE_KEEP_ALIVE_TIMEOUT=WAIT * 3)
        with serve(settings, engine) as server, server.connect() as sock:
            sock.sendall(WEBHOOK_HEAD + b"Content-Length: 99999999\r\n\r\n{")
            response = read_until_closed(sock)
        assert status_of(response) == 413


class TestSizes:
    def test_an_oversized_head_is_refused(self, settings_for: Any, engine: Engine) -> None:
        # The default limit: 64 KiB.
        with serve(settings_for(), engine) as server, server.connect() as sock:
            # Refused while it was still sending is a refusal too.
            with suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(WEBHOOK_HEAD + b"X-Padding: " + b"a" * (128 * 1024) + b"\r\n")
            response = read_until_closed(sock)
        # Reset before the answer could be read is a refusal too; an answer is a 431.
        assert response == b"" or status_of(response) == 431
        assert stored_events(engine) == 0

    def test_an_endless_header_line_is_refused_before_it_ends(
        self, settings_for: Any, engine: Engine
    ) -> None:
        with serve(settings_for(), engine) as server, server.connect() as sock:
            sent = 0
            try:
                sock.sendall(WEBHOOK_HEAD + b"X-Padding: ")
                while sent < 64 * 1024 * 1024:  # 64 MiB: the server must stop it first
                    sock.sendall(b"a" * 65536)
                    sent += 65536
            except (BrokenPipeError, ConnectionResetError):
                pass
            read_until_closed(sock)
        assert sent < 64 * 1024 * 1024

    def test_a_large_head_within_the_limit_reaches_the_app(
        self, settings_for: Any, engine: Engine
    ) -> None:
        with serve(settings_for(), engine) as server, server.connect() as sock:
            padding = b"X-Padding: " + b"a" * (48 * 1024) + b"\r\n"
            sock.sendall(WEBHOOK_HEAD + padding + b"Content-Length: 2\r\n\r\n{}")
            response = read_response(sock)
        assert status_of(response) == 400  # the app's: no Stripe-Signature header
        assert b"bad_signature_header" in response


class TestConnections:
    def test_connections_beyond_the_limit_get_503(self, settings_for: Any, engine: Engine) -> None:
        settings = settings_for(BRIDGE_MAX_CONNECTIONS=2, BRIDGE_KEEP_ALIVE_TIMEOUT=WAIT * 3)
        with serve(settings, engine) as server, server.connect() as held:
            # Answered, so the server has taken it; kept alive, so it stays open.
            held.sendall(b"GET /healthz HTTP/1.1\r\nHost: bridge\r\n\r\n")
            assert status_of(read_response(held)) == 200
            with server.connect() as extra:
                extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: bridge\r\n\r\n")
                assert status_of(read_response(extra)) == 503

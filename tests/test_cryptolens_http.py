"""The HTTP pool over real sockets, against a server that answers from a script.

Each test scripts what the server does with each request it reads (reply, close, hang,
drop), so framing, keep-alive and every failure meet a real TCP (and TLS) stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from bridge.cryptolens import CryptolensClient, OutcomeUnknown, Transient
from bridge.cryptolens.http import (
    ConnectFailed,
    ConnectionLost,
    HTTPPool,
    MaybeSent,
    NotSent,
    PoolTimeout,
    ProtocolError,
    ReplyTimeout,
)

OK_BODY = b'{"result":0,"message":""}'
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
    len(OK_BODY),
    OK_BODY,
)
FORM = {"ProductId": "1001", "Key": "AAAAA-BBBBB", "token": "tok"}

# What the server does with one request: write to the connection, and say whether to keep it.
Action = Callable[[asyncio.StreamWriter], Awaitable[bool]]


def reply(raw: bytes, *, close: bool = False) -> Action:
    async def act(writer: asyncio.StreamWriter) -> bool:
        writer.write(raw)
        await writer.drain()
        return not close

    return act


def drop() -> Action:
    """Read the request, then close without a word (a crash after applying it)."""

    async def act(writer: asyncio.StreamWriter) -> bool:
        return False

    return act


def hold(release: asyncio.Event, raw: bytes = OK) -> Action:
    """Answer only once ``release`` is set (a slow service)."""

    async def act(writer: asyncio.StreamWriter) -> bool:
        await release.wait()
        writer.write(raw)
        await writer.drain()
        return True

    return act


class ScriptedServer:
    """Serves ``actions`` in order, one per request, over any number of connections."""

    def __init__(self, actions: list[Action]) -> None:
        self.actions = actions
        self.requests: list[tuple[bytes, bytes]] = []  # (head, body)
        self.connections = 0
        self.closed_by_client = asyncio.Event()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    @property
    def url(self) -> str:
        return self.base + "key/GetKey"

    async def start(self, tls: ssl.SSLContext | None = None) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=tls)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for handler in self._handlers:
            handler.cancel()  # one may still hold a reply nobody waits for
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    self.closed_by_client.set()
                    return
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                self.requests.append((head, await reader.readexactly(length)))
                if not await self.actions.pop(0)(writer):
                    return
        except (ConnectionError, ssl.SSLError):
            return
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def serving(*actions: Action) -> AsyncIterator[ScriptedServer]:
    server = ScriptedServer(list(actions))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def pool() -> AsyncIterator[HTTPPool]:
    http = HTTPPool(connect_timeout=2, read_timeout=2)
    try:
        yield http
    finally:
        await http.aclose()


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until ``condition`` holds (a bound, not a timing assertion)."""
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.005)


class TestExchange:
    async def test_posts_the_form_and_reuses_the_connection(self, pool: HTTPPool) -> None:
        async with serving(reply(OK), reply(OK)) as server:
            first = await pool.post_form(server.url, FORM)
            second = await pool.post_form(server.url, FORM)
        assert (first.status_code, first.content) == (200, OK_BODY)
        assert first.headers["content-type"] == "application/json"
        assert second.content == OK_BODY
        assert server.connections == 1
        head, body = server.requests[0]
        assert head.startswith(b"POST /api/key/GetKey HTTP/1.1\r\n")
        assert f"Host: 127.0.0.1:{server.port}\r\n".encode() in head
        assert b"Content-Type: application/x-www-form-urlencoded\r\n" in head
        assert {k: v[0] for k, v in parse_qs(body.decode()).items()} == FORM

    async def test_form_values_are_url_encoded(self, pool: HTTPPool) -> None:
        async with serving(reply(OK)) as server:
            await pool.post_form(server.url, {"Notes": "a b&c=d/é", "Events": '[{"a":1}]'})
        body = server.requests[0][1]
        assert body == b"Notes=a+b%26c%3Dd%2F%C3%A9&Events=%5B%7B%22a%22%3A1%7D%5D"
        assert parse_qs(body.decode())["Notes"] == ["a b&c=d/é"]

    async def test_chunked_body_is_joined_and_the_connection_kept(self, pool: HTTPPool) -> None:
        chunked = (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"a\r\n" + OK_BODY[:10] + b"\r\n"
            b"%x\r\n" % (len(OK_BODY) - 10) + OK_BODY[10:] + b"\r\n0\r\n\r\n"
        )
        async with serving(reply(chunked), reply(OK)) as server:
            response = await pool.post_form(server.url, FORM)
            await pool.post_form(server.url, FORM)
        assert response.content == OK_BODY
        assert server.connections == 1

    async def test_connection_close_is_honoured(self, pool: HTTPPool) -> None:
        closing = OK.replace(b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 200 OK\r\nConnection: close\r\n")
        async with serving(reply(closing), reply(OK)) as server:
            response = await pool.post_form(server.url, FORM)
            await pool.post_form(server.url, FORM)
        assert response.content == OK_BODY
        assert server.connections == 2

    async def test_http_1_0_body_ends_with_the_connection(self, pool: HTTPPool) -> None:
        old = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + OK_BODY
        async with serving(reply(old, close=True), reply(OK)) as server:
            response = await pool.post_form(server.url, FORM)
            await pool.post_form(server.url, FORM)
        assert (response.status_code, response.content) == (200, OK_BODY)
        assert server.connections == 2

    async def test_interim_1xx_reply_is_skipped(self, pool: HTTPPool) -> None:
        async with serving(reply(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)) as server:
            response = await pool.post_form(server.url, FORM)
        assert (response.status_code, response.content) == (200, OK_BODY)

    async def test_error_status_and_repeated_headers_are_returned(self, pool: HTTPPool) -> None:
        raw = (
            b"HTTP/1.1 429 Too Many\r\nRetry-After: 1\r\n"
            b"X-A: 1\r\nX-A: 2\r\nContent-Length: 0\r\n\r\n"
        )
        async with serving(reply(raw)) as server:
            response = await pool.post_form(server.url, FORM)
        assert response.status_code == 429
        assert response.headers["retry-after"] == "1"
        assert response.headers["x-a"] == "1, 2"


class TestIdleConnections:
    async def test_a_connection_the_server_closed_is_not_reused(self, pool: HTTPPool) -> None:
        async with serving(reply(OK, close=True), reply(OK)) as server:
            await pool.post_form(server.url, FORM)
            # The server closed it after a keep-alive reply; once the client has seen the
            # EOF the next call opens a new connection and no error surfaces.
            await until(lambda: server.connections == 1 and _idle_dead(pool))
            response = await pool.post_form(server.url, FORM)
        assert response.content == OK_BODY
        assert server.connections == 2

    async def test_connections_idle_past_the_limit_are_closed_not_reused(self) -> None:
        pool = HTTPPool(connect_timeout=2, read_timeout=2, idle_limit=0)
        try:
            async with serving(reply(OK), reply(OK)) as server:
                await pool.post_form(server.url, FORM)
                await pool.post_form(server.url, FORM)
                await until(server.closed_by_client.is_set)
        finally:
            await pool.aclose()
        assert server.connections == 2

    async def test_bytes_on_an_idle_connection_make_it_unusable(self, pool: HTTPPool) -> None:
        timeout = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n"
        async with serving(reply(OK + timeout), reply(OK)) as server:
            await pool.post_form(server.url, FORM)
            await until(lambda: _idle_dead(pool))
            response = await pool.post_form(server.url, FORM)
        assert response.status_code == 200
        assert server.connections == 2


def _idle_dead(pool: HTTPPool) -> bool:
    return all(c.dead for o in pool._origins.values() for c in o._idle)


class TestFailures:
    async def test_connect_refused_is_not_sent(self, pool: HTTPPool) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]  # bound, not listening: connections are refused
            with pytest.raises(ConnectFailed):
                await pool.post_form(f"http://127.0.0.1:{port}/api/x", FORM)

    async def test_no_reply_in_time_is_maybe_sent_and_the_connection_dropped(self) -> None:
        release = asyncio.Event()
        pool = HTTPPool(connect_timeout=2, read_timeout=0.05)
        try:
            async with serving(hold(release), reply(OK)) as server:
                with pytest.raises(ReplyTimeout):
                    await pool.post_form(server.url, FORM)
                release.set()
                response = await pool.post_form(server.url, FORM)
        finally:
            await pool.aclose()
        assert response.content == OK_BODY
        assert server.connections == 2

    async def test_dropped_after_the_request_is_connection_lost(self, pool: HTTPPool) -> None:
        async with serving(drop()) as server:
            with pytest.raises(ConnectionLost):
                await pool.post_form(server.url, FORM)
        assert len(server.requests) == 1

    async def test_body_cut_short_is_connection_lost(self, pool: HTTPPool) -> None:
        async with serving(reply(OK[:-5], close=True)) as server:
            with pytest.raises(ConnectionLost):
                await pool.post_form(server.url, FORM)

    async def test_garbage_reply_is_a_protocol_error(self, pool: HTTPPool) -> None:
        async with serving(reply(b"SSH-2.0-OpenSSH\r\n\r\n")) as server:
            with pytest.raises(ProtocolError):
                await pool.post_form(server.url, FORM)

    async def test_waiting_past_the_pool_bound_is_not_sent(self) -> None:
        release = asyncio.Event()
        pool = HTTPPool(connect_timeout=2, read_timeout=5, pool_timeout=0.05, max_connections=1)
        try:
            async with serving(hold(release), reply(OK)) as server:
                busy = asyncio.create_task(pool.post_form(server.url, FORM))
                await until(lambda: len(server.requests) == 1)
                with pytest.raises(PoolTimeout):
                    await pool.post_form(server.url, FORM)
                release.set()
                assert (await busy).content == OK_BODY
                assert (await pool.post_form(server.url, FORM)).content == OK_BODY
        finally:
            await pool.aclose()
        assert server.connections == 1
        assert issubclass(PoolTimeout, NotSent)

    async def test_a_waiter_gets_the_released_connection(self) -> None:
        pool = HTTPPool(connect_timeout=2, read_timeout=5, max_connections=1)
        try:
            async with serving(*[reply(OK)] * 5) as server:
                calls = [pool.post_form(server.url, FORM) for _ in range(5)]
                responses = await asyncio.gather(*calls)
        finally:
            await pool.aclose()
        assert [r.status_code for r in responses] == [200] * 5
        assert server.connections == 1

    async def test_a_cancelled_call_gives_its_slot_back(self) -> None:
        release = asyncio.Event()
        pool = HTTPPool(connect_timeout=2, read_timeout=5, pool_timeout=1, max_connections=1)
        try:
            async with serving(hold(release), reply(OK)) as server:
                stuck = asyncio.create_task(pool.post_form(server.url, FORM))
                await until(lambda: len(server.requests) == 1)
                stuck.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await stuck
                release.set()
                response = await pool.post_form(server.url, FORM)
        finally:
            await pool.aclose()
        assert response.content == OK_BODY
        assert server.connections == 2  # the cancelled exchange's connection was not reused

    async def test_a_closed_pool_sends_nothing(self) -> None:
        pool = HTTPPool()
        async with serving(reply(OK)) as server:
            await pool.post_form(server.url, FORM)
            await pool.aclose()
            await until(server.closed_by_client.is_set)
            with pytest.raises(NotSent):
                await pool.post_form(server.url, FORM)
        assert len(server.requests) == 1

    @pytest.mark.parametrize(
        "url", ["ftp://example.com/api/x", "http://127.0.0.1:99999/api/x", "http:///api/x"]
    )
    async def test_unusable_urls_are_not_sent(self, pool: HTTPPool, url: str) -> None:
        with pytest.raises(NotSent):
            await pool.post_form(url, FORM)


class TestClassification:
    """Through the client: not sent is Transient, anything after the write OutcomeUnknown."""

    async def test_refused_is_transient(self, pool: HTTPPool) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            client = CryptolensClient(
                pool, token="tok", base_url=f"http://127.0.0.1:{sock.getsockname()[1]}/api/"
            )
            with pytest.raises(Transient) as caught:
                await client.extend_license(1, "K", 1)
        assert not isinstance(caught.value, OutcomeUnknown)

    @pytest.mark.parametrize(
        "action",
        [
            drop(),
            reply(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n{", close=True),
            reply(b"HTTP/1.1 2xx Nope\r\n\r\n"),
        ],
        ids=["dropped", "cut-short", "garbage"],
    )
    async def test_lost_after_sending_is_outcome_unknown(
        self, pool: HTTPPool, action: Action
    ) -> None:
        async with serving(action) as server:
            client = CryptolensClient(pool, token="tok", base_url=server.base)
            with pytest.raises(OutcomeUnknown):
                await client.extend_license(1, "K", 1)

    async def test_reply_timeout_is_outcome_unknown(self) -> None:
        release = asyncio.Event()
        pool = HTTPPool(read_timeout=0.05)
        try:
            async with serving(hold(release)) as server:
                client = CryptolensClient(pool, token="tok", base_url=server.base)
                with pytest.raises(OutcomeUnknown, match="no reply in time"):
                    await client.extend_license(1, "K", 1)
                release.set()
        finally:
            await pool.aclose()

    def test_the_two_sides_do_not_overlap(self) -> None:
        for sent in (ReplyTimeout, ConnectionLost, ProtocolError):
            assert issubclass(sent, MaybeSent) and not issubclass(sent, NotSent)
        for unsent in (ConnectFailed, PoolTimeout):
            assert issubclass(unsent, NotSent) and not issubclass(unsent, MaybeSent)


openssl = shutil.which("openssl")


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for ``localhost`` (openssl's CLI: no test dependency)."""
    if openssl is None:
        pytest.skip("needs the openssl command")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    args = ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    args += ["-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout", str(key)]
    args += ["-out", str(cert), "-addext", "subjectAltName=DNS:localhost"]
    subprocess.run(
        [openssl, *args],
        check=True,
        capture_output=True,
    )
    return cert, key


class TestTLS:
    def test_default_context_verifies_the_server(self) -> None:
        context = HTTPPool().ssl_context
        assert context.verify_mode == ssl.CERT_REQUIRED
        assert context.check_hostname is True

    async def test_https_with_a_trusted_certificate(self, certificate: tuple[Path, Path]) -> None:
        cert, key = certificate
        server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_tls.load_cert_chain(cert, key)
        client_tls = ssl.create_default_context(cafile=str(cert))
        server = ScriptedServer([reply(OK), reply(OK)])
        await server.start(tls=server_tls)
        pool = HTTPPool(connect_timeout=5, read_timeout=5, ssl_context=client_tls)
        try:
            url = f"https://localhost:{server.port}/api/key/GetKey"
            assert (await pool.post_form(url, FORM)).content == OK_BODY
            assert (await pool.post_form(url, FORM)).content == OK_BODY
        finally:
            await pool.aclose()
            await server.stop()
        assert server.connections == 1
        assert f"Host: localhost:{server.port}\r\n".encode() in server.requests[0][0]

    async def test_an_untrusted_certificate_is_not_sent(
        self, certificate: tuple[Path, Path]
    ) -> None:
        cert, key = certificate
        server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_tls.load_cert_chain(cert, key)
        server = ScriptedServer([reply(OK)])
        await server.start(tls=server_tls)
        pool = HTTPPool(connect_timeout=5, read_timeout=5)  # the system's trust store
        try:
            with pytest.raises(ConnectFailed):
                await pool.post_form(f"https://localhost:{server.port}/api/x", FORM)
        finally:
            await pool.aclose()
            await server.stop()
        assert server.requests == []

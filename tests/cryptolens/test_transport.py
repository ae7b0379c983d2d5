"""The Cryptolens client on its httpx transport, over real sockets, against scripted servers.

Each test scripts what a server on 127.0.0.1 does with each request it reads (reply,
close, hang, drop), so keep-alive, timeouts, pool waits, TLS and proxies meet a real TCP
stack, and each failure is checked against the error tree: *not sent* is ``Transient``,
anything after the request was written ``OutcomeUnknown``. ``httpx.MockTransport`` is used
only for pure classification, in test_cryptolens_client.py.
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

import httpx
import pytest

from bridge.cryptolens import (
    CryptolensClient,
    OutcomeUnknown,
    RateLimited,
    Transient,
    make_http_client,
    make_http_clients,
)
from bridge.cryptolens.transport import KEEPALIVE_EXPIRY

TOKEN = "tok_transport_secret_42"
OK_BODY = b'{"result":0,"message":""}'
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
    len(OK_BODY),
    OK_BODY,
)

# What the server does with one request: write to the connection, and say whether to keep it.
Action = Callable[[asyncio.StreamWriter], Awaitable[bool]]


def reply(raw: bytes, *, close: bool = False) -> Action:
    async def act(writer: asyncio.StreamWriter) -> bool:
        writer.write(raw)
        await writer.drain()
        return not close

    return act


def status(code: int, *headers: str) -> Action:
    head = "".join(f"{h}\r\n" for h in headers)
    return reply(f"HTTP/1.1 {code} X\r\n{head}Content-Length: 0\r\n\r\n".encode())


def drop() -> Action:
    """Read the request, then close without a word (a crash after applying it, or an idle
    timer that fired as the request arrived)."""

    async def act(writer: asyncio.StreamWriter) -> bool:
        return False

    return act


def hold(release: asyncio.Event, raw: bytes = OK) -> Action:
    """Answer only once ``release`` is set (a slow service; never, if it is not set)."""

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
        self.closed = 0  # connections this server has finished closing
        self.port = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    async def start(self, tls: ssl.SSLContext | None = None) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=tls)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for handler in self._handlers:
            handler.cancel()  # one may still hold a reply nobody waits for
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

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
                    return  # the client closed the connection
                lengths = [
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ]
                body = await reader.readexactly(lengths[0]) if lengths else b""
                self.requests.append((head, body))
                if not await self.actions.pop(0)(writer):
                    return
        except (ConnectionError, ssl.SSLError):
            return
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()
            self.closed += 1


@contextlib.asynccontextmanager
async def serving(*actions: Action) -> AsyncIterator[ScriptedServer]:
    server = ScriptedServer(list(actions))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture(autouse=True)
def no_proxy_from_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """``trust_env`` reads proxies from the environment: these tests set their own."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    client = make_http_client(connect_timeout=2, read_timeout=2)
    try:
        yield client
    finally:
        await client.aclose()


def client_for(http: httpx.AsyncClient, server: ScriptedServer) -> CryptolensClient:
    return CryptolensClient(http, token=TOKEN, base_url=server.base)


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until ``condition`` holds (a bound, not a timing assertion)."""
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.005)


def _pool(http: httpx.AsyncClient) -> httpx.AsyncHTTPTransport:
    transport = http._transport  # the default transport: where the limits live
    assert isinstance(transport, httpx.AsyncHTTPTransport)
    return transport


def _idle_ones_closed_by_peer(http: httpx.AsyncClient) -> bool:
    """httpcore's own test before reusing a connection: idle, yet readable (EOF)."""
    return all(c.has_expired() for c in _pool(http)._pool.connections)


class TestConfiguration:
    def test_limits_and_timeouts_are_explicit(self) -> None:
        http = make_http_client(connect_timeout=3, read_timeout=7, max_connections=9)
        pool = _pool(http)._pool
        assert (pool._max_connections, pool._max_keepalive_connections) == (9, 9)
        assert pool._keepalive_expiry == KEEPALIVE_EXPIRY < 5  # uvicorn closes idle at 5 s
        timeout = http.timeout
        assert (timeout.connect, timeout.read, timeout.write, timeout.pool) == (3, 7, 7, 3)
        assert http.trust_env is True


class TestExchange:
    async def test_posts_the_form_with_the_token_in_the_body_and_reuses_the_connection(
        self, http: httpx.AsyncClient
    ) -> None:
        async with serving(reply(OK), reply(OK)) as server:
            client = client_for(http, server)
            await client.extend_license(1001, "AAAAA-BBBBB", 30)
            await client.extend_license(1001, "AAAAA-BBBBB", 30)
        assert server.connections == 1
        head, body = server.requests[0]
        assert head.startswith(b"POST /api/key/ExtendLicense HTTP/1.1\r\n")
        assert f"host: 127.0.0.1:{server.port}\r\n".encode() in head.lower()
        assert b"content-type: application/x-www-form-urlencoded\r\n" in head.lower()
        assert b"user-agent: cryptolens-bridge\r\n" in head.lower()
        assert TOKEN.encode() not in head
        assert {k: v[0] for k, v in parse_qs(body.decode()).items()} == {
            "ProductId": "1001",
            "Key": "AAAAA-BBBBB",
            "NoOfDays": "30",
            "token": TOKEN,
        }

    async def test_form_values_are_url_encoded(self, http: httpx.AsyncClient) -> None:
        async with serving(reply(OK)) as server:
            await client_for(http, server).change_notes(1, "K", "a b&c=d/é")
        assert parse_qs(server.requests[0][1].decode())["Notes"] == ["a b&c=d/é"]

    async def test_chunked_reply_is_joined_and_the_connection_kept(
        self, http: httpx.AsyncClient
    ) -> None:
        chunked = (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"a\r\n" + OK_BODY[:10] + b"\r\n"
            b"%x\r\n" % (len(OK_BODY) - 10) + OK_BODY[10:] + b"\r\n0\r\n\r\n"
        )
        async with serving(reply(chunked), reply(OK)) as server:
            client = client_for(http, server)
            assert await client.call("key/GetKey", {}) == {"result": 0, "message": ""}
            await client.call("key/GetKey", {})
        assert server.connections == 1

    async def test_connection_close_is_honoured(self, http: httpx.AsyncClient) -> None:
        closing = OK.replace(b"200 OK\r\n", b"200 OK\r\nConnection: close\r\n")
        async with serving(reply(closing, close=True), reply(OK)) as server:
            client = client_for(http, server)
            await client.call("key/GetKey", {})
            await client.call("key/GetKey", {})
        assert server.connections == 2


class TestKeepAlive:
    async def test_a_connection_the_server_closed_while_idle_is_replaced_unseen(
        self, http: httpx.AsyncClient
    ) -> None:
        # The server closes a kept-alive connection (its idle timeout). Before writing,
        # httpcore sees the EOF on the idle socket and opens a new connection: nothing
        # had been sent on the old one, so this is safe, and no error surfaces.
        async with serving(reply(OK, close=True), reply(OK)) as server:
            client = client_for(http, server)
            await client.call("key/GetKey", {})
            await until(lambda: server.closed == 1 and _idle_ones_closed_by_peer(http))
            assert await client.call("key/GetKey", {}) == {"result": 0, "message": ""}
        assert server.connections == 2
        assert len(server.requests) == 2

    async def test_a_request_written_on_a_reused_connection_is_not_resent(
        self, http: httpx.AsyncClient
    ) -> None:
        # The server reads the second request on the kept-alive connection, then closes
        # (as when its idle timer fires as the request arrives). The request was written:
        # httpx must not send it again on a new connection, and the outcome is unknown.
        async with serving(reply(OK), drop(), reply(OK)) as server:
            client = client_for(http, server)
            await client.extend_license(1, "K", 1)
            with pytest.raises(OutcomeUnknown, match="connection lost"):
                await client.extend_license(1, "K", 1)
            assert (len(server.requests), server.connections) == (2, 1)
            await client.extend_license(1, "K", 1)  # a fresh connection for the next call
        assert (len(server.requests), server.connections) == (3, 2)


class TestNotSent:
    async def test_nothing_listening_is_transient(self, http: httpx.AsyncClient) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]  # bound, not listening: connections are refused
            client = CryptolensClient(http, token=TOKEN, base_url=f"http://127.0.0.1:{port}/api/")
            with pytest.raises(Transient, match="not sent: ConnectError") as caught:
                await client.extend_license(1, "K", 1)
        assert not isinstance(caught.value, OutcomeUnknown)
        assert TOKEN not in str(caught.value)

    async def test_waiting_past_the_pool_timeout_is_transient(self) -> None:
        release = asyncio.Event()
        http = make_http_client(read_timeout=5, pool_timeout=0.05, max_connections=1)
        try:
            async with serving(hold(release), reply(OK)) as server:
                client = client_for(http, server)
                busy = asyncio.create_task(client.extend_license(1, "K", 1))
                await until(lambda: len(server.requests) == 1)
                with pytest.raises(Transient, match="PoolTimeout") as caught:
                    await client.extend_license(1, "K", 2)
                assert not isinstance(caught.value, OutcomeUnknown)
                assert len(server.requests) == 1  # the second never reached the server
                release.set()
                await busy
                await client.extend_license(1, "K", 3)
        finally:
            await http.aclose()
        assert server.connections == 1

    async def test_waiters_get_the_released_connection(self) -> None:
        http = make_http_client(max_connections=1)
        try:
            async with serving(*[reply(OK)] * 5) as server:
                client = client_for(http, server)
                await asyncio.gather(*[client.extend_license(1, "K", n) for n in range(5)])
        finally:
            await http.aclose()
        assert (len(server.requests), server.connections) == (5, 1)

    async def test_a_cancelled_call_gives_its_connection_back(self) -> None:
        release = asyncio.Event()
        http = make_http_client(read_timeout=5, pool_timeout=1, max_connections=1)
        try:
            async with serving(hold(release), reply(OK)) as server:
                client = client_for(http, server)
                stuck = asyncio.create_task(client.extend_license(1, "K", 1))
                await until(lambda: len(server.requests) == 1)
                stuck.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await stuck
                release.set()
                await client.extend_license(1, "K", 2)
        finally:
            await http.aclose()
        assert server.connections == 2  # the cancelled exchange's connection was not reused

    @pytest.mark.parametrize(
        "base",
        [
            "ftp://example.com/api/",
            "http://127.0.0.1:99999/api/",
            "http:///api/",
            "http://a:b/api/",
        ],
    )
    def test_unusable_urls_are_refused_when_the_client_is_made(
        self, http: httpx.AsyncClient, base: str
    ) -> None:
        # httpx would hand port 99999 to the socket layer, whose OverflowError no error
        # class describes: a configuration error, so it stops the worker at startup.
        with pytest.raises(ValueError, match="Cryptolens API URL"):
            CryptolensClient(http, token=TOKEN, base_url=base)


class TestMaybeSent:
    async def test_a_server_that_never_answers_is_outcome_unknown(self) -> None:
        never = asyncio.Event()  # never set: the server holds the reply until it stops
        http = make_http_client(read_timeout=0.2)
        try:
            async with serving(hold(never), reply(OK)) as server:
                client = client_for(http, server)
                with pytest.raises(OutcomeUnknown, match="no reply in time: ReadTimeout"):
                    await client.extend_license(1, "K", 1)
                assert len(server.requests) == 1
                await client.extend_license(1, "K", 2)  # not on the timed-out connection
        finally:
            await http.aclose()
        assert server.connections == 2

    @pytest.mark.parametrize(
        "action",
        [
            drop(),
            reply(OK[:-5], close=True),
            reply(b"SSH-2.0-OpenSSH\r\n\r\n"),
        ],
        ids=["closed-after-the-request", "closed-mid-reply", "garbage"],
    )
    async def test_lost_after_sending_is_outcome_unknown(
        self, http: httpx.AsyncClient, action: Action
    ) -> None:
        async with serving(action) as server:
            with pytest.raises(OutcomeUnknown, match="connection lost") as caught:
                await client_for(http, server).extend_license(1, "K", 1)
        assert len(server.requests) == 1  # and never sent again
        assert TOKEN not in str(caught.value)


class TestStatus:
    async def test_429_is_rate_limited_with_retry_after(self, http: httpx.AsyncClient) -> None:
        async with serving(status(429, "Retry-After: 3")) as server:
            with pytest.raises(RateLimited) as caught:
                await client_for(http, server).extend_license(1, "K", 1)
        assert caught.value.retry_after == 3.0

    async def test_503_is_transient(self, http: httpx.AsyncClient) -> None:
        async with serving(status(503), reply(OK)) as server:
            client = client_for(http, server)
            with pytest.raises(Transient) as caught:
                await client.extend_license(1, "K", 1)
            assert not isinstance(caught.value, OutcomeUnknown)
            await client.extend_license(1, "K", 1)
        assert server.connections == 1  # an error status leaves the connection usable

    @pytest.mark.parametrize("code", [500, 502, 504])
    async def test_5xx_after_processing_may_have_applied_it(
        self, http: httpx.AsyncClient, code: int
    ) -> None:
        async with serving(status(code)) as server:
            with pytest.raises(OutcomeUnknown, match=f"HTTP {code}"):
                await client_for(http, server).extend_license(1, "K", 1)


class TestProxies:
    """``trust_env``: HTTP_PROXY / HTTPS_PROXY / NO_PROXY, read when the client is made."""

    async def test_http_proxy_from_the_environment_carries_the_call(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        async with serving(reply(OK)) as proxy:
            monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
            http = make_http_client()
            try:
                client = CryptolensClient(
                    http, token=TOKEN, base_url="http://cryptolens.invalid/api/"
                )
                await client.extend_license(1, "K", 1)
            finally:
                await http.aclose()
        head, body = proxy.requests[0]
        assert head.startswith(b"POST http://cryptolens.invalid/api/key/ExtendLicense HTTP/1.1")
        assert TOKEN.encode() not in head and TOKEN.encode() in body

    async def test_no_proxy_goes_direct(self, monkeypatch: pytest.MonkeyPatch) -> None:
        async with serving() as proxy, serving(reply(OK)) as server:
            monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
            monkeypatch.setenv("NO_PROXY", "127.0.0.1")
            http = make_http_client()
            try:
                await client_for(http, server).extend_license(1, "K", 1)
            finally:
                await http.aclose()
        assert (proxy.connections, len(server.requests)) == (0, 1)

    async def test_a_refused_tunnel_is_transient(self, monkeypatch: pytest.MonkeyPatch) -> None:
        async with serving(status(403)) as proxy:
            monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
            http = make_http_client()
            try:
                client = CryptolensClient(
                    http, token=TOKEN, base_url="https://cryptolens.invalid/api/"
                )
                with pytest.raises(Transient, match="ProxyError") as caught:
                    await client.extend_license(1, "K", 1)
            finally:
                await http.aclose()
        assert not isinstance(caught.value, OutcomeUnknown)
        head, body = proxy.requests[0]
        assert head.startswith(b"CONNECT cryptolens.invalid:443 HTTP/1.1")
        assert body == b"" and TOKEN.encode() not in head


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
    subprocess.run([openssl, *args], check=True, capture_output=True)
    return cert, key


@contextlib.asynccontextmanager
async def serving_tls(cert: Path, key: Path, *actions: Action) -> AsyncIterator[ScriptedServer]:
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    server = ScriptedServer(list(actions))
    await server.start(tls=server_tls)
    try:
        yield server
    finally:
        await server.stop()


class TestTLS:
    async def test_https_with_a_trusted_certificate(self, certificate: tuple[Path, Path]) -> None:
        cert, key = certificate
        trusted = ssl.create_default_context(cafile=str(cert))
        # The client closes before the server stops: a TLS server's close waits for it.
        async with (
            serving_tls(cert, key, reply(OK), reply(OK)) as server,
            make_http_client(verify=trusted) as http,
        ):
            base = f"https://localhost:{server.port}/api/"
            client = CryptolensClient(http, token=TOKEN, base_url=base)
            await client.extend_license(1, "K", 1)
            await client.extend_license(1, "K", 1)
        assert server.connections == 1
        assert f"host: localhost:{server.port}\r\n".encode() in server.requests[0][0].lower()

    async def test_an_untrusted_certificate_is_not_sent(
        self, certificate: tuple[Path, Path]
    ) -> None:
        cert, key = certificate
        http = make_http_client()  # the default trust store
        try:
            async with serving_tls(cert, key, reply(OK)) as server:
                base = f"https://localhost:{server.port}/api/"
                client = CryptolensClient(http, token=TOKEN, base_url=base)
                with pytest.raises(Transient, match="ConnectError") as caught:
                    await client.extend_license(1, "K", 1)
        finally:
            await http.aclose()
        assert not isinstance(caught.value, OutcomeUnknown)
        assert server.requests == []


class TestClients:
    """The worker's connections over a few clients (bridge.cryptolens.pools)."""

    def test_the_connections_are_split_into_clients_of_ten(self) -> None:
        clients = make_http_clients(max_connections=100)
        assert len(clients.clients) == 10
        assert {_pool(c)._pool._max_connections for c in clients.clients} == {10}
        assert all(c.trust_env for c in clients.clients)  # proxies from the environment
        few = make_http_clients(max_connections=4)
        assert [_pool(c)._pool._max_connections for c in few.clients] == [4]

    async def test_requests_take_the_clients_in_turn_each_keeping_its_connection(
        self,
    ) -> None:
        async with (
            make_http_clients(connect_timeout=2, read_timeout=2, max_connections=20) as clients,
            serving(*[reply(OK)] * 4) as server,
        ):
            client = CryptolensClient(clients, token=TOKEN, base_url=server.base)
            for _ in range(4):
                await client.extend_license(1001, "AAAAA-BBBBB", 30)
            assert len(clients.clients) == 2
        assert server.connections == 2  # one per client, each reused once
        assert clients.is_closed

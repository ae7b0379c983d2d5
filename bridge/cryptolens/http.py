"""A small HTTP/1.1 client for form POSTs: pooled keep-alive connections on asyncio protocols.

Why not httpx: through ``httpx.AsyncClient.post`` one Cryptolens call costs ~600 µs of
client CPU (httpx, httpcore, anyio, sniffio), the worker's largest cost per purchase. Here
a call is one ``transport.write`` of prebuilt bytes, httptools' C parser on the reply and
one timer: a small fraction of that (numbers in the commit that brought it in). It does
only what the Cryptolens client needs: POST a form, read a reply framed by Content-Length,
chunked, or the connection closing; no redirects, cookies, proxies or HTTP/2.

What decides retries is whether a request may have reached the service, so the errors say
exactly that, and nothing else:

    HTTPError
    ├── NotSent              no byte of the request was handed to a socket: safe to resend
    │   ├── ConnectFailed    refused, unreachable, name or TLS failure, connect timeout
    │   └── PoolTimeout      every connection stayed busy for the pool wait bound
    └── MaybeSent            the request was written: the service may have applied it
        ├── ReplyTimeout     no complete reply within the read timeout
        ├── ConnectionLost   closed or reset before the reply was complete
        └── ProtocolError    the reply was not HTTP/1.1 we can read

A connection is reused only when the last reply allowed it (no ``Connection: close``, not
HTTP/1.0 without keep-alive), the peer has not closed it since (the protocol sees EOF on
every turn of the loop) and it has been idle for less than ``idle_limit``: below common
server keep-alive timeouts (uvicorn's 5 s), so a server rarely closes one as we write.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque
from collections.abc import Mapping
from typing import Protocol, cast
from urllib.parse import quote_plus, urlsplit

import httptools


class HTTPError(Exception):
    """Base class; ``str(error)`` names what happened, never the request's content."""


class NotSent(HTTPError):
    pass


class ConnectFailed(NotSent):
    pass


class PoolTimeout(NotSent):
    pass


class MaybeSent(HTTPError):
    pass


class ReplyTimeout(MaybeSent):
    pass


class ConnectionLost(MaybeSent):
    pass


class ProtocolError(MaybeSent):
    pass


class Response:
    """A complete reply: status, headers (lower-case names) and the whole body."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers: dict[str, str], content: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def __repr__(self) -> str:
        return f"<Response [{self.status_code}]>"


class FormPoster(Protocol):
    """What :class:`~bridge.cryptolens.client.CryptolensClient` needs from a transport."""

    async def post_form(self, url: str, form: Mapping[str, str]) -> Response: ...

    async def aclose(self) -> None: ...


def encode_form(form: Mapping[str, str]) -> bytes:
    """``application/x-www-form-urlencoded``, as httpx and browsers write it."""
    return "&".join([quote_plus(k) + "=" + quote_plus(v) for k, v in form.items()]).encode()


class _Connection(asyncio.Protocol):
    """One socket, one exchange at a time; ``dead`` once it must not be used again."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Response] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._status = 0
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._headers_done = False
        self.closed: asyncio.Future[None] = loop.create_future()
        self.dead = False
        self.idle_since = 0.0

    # -- requests ------------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        transport = self._transport
        return not self.dead and transport is not None and not transport.is_closing()

    def send(self, request: bytes, timeout: float) -> asyncio.Future[Response]:
        """Write ``request`` and return the future of its reply. Once the write is made the
        request counts as sent: failures from then on are :class:`MaybeSent`."""
        assert self._transport is not None and self._waiter is None
        if not self.usable:
            # Closed between being opened or handed over and now. A closing transport
            # would drop the write silently, so say that nothing was sent.
            raise NotSent("connection closed before the request was written")
        waiter = self._waiter = self._loop.create_future()
        self._timer = self._loop.call_later(timeout, self._timed_out)
        self._transport.write(request)
        return waiter

    def close(self) -> None:
        self.dead = True
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        self.dead = True
        if self._transport is not None:
            self._transport.abort()

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # The request is one write, but past one segment Nagle would hold its tail
            # for the server's delayed ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            self.abort()  # bytes nobody asked for: see on_message_begin
            return
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._fail(ProtocolError(f"unreadable reply: {type(exc).__name__}"))

    def eof_received(self) -> bool | None:
        self._peer_closed()
        return None  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._peer_closed()
        if not self.closed.done():
            self.closed.set_result(None)

    def _peer_closed(self) -> None:
        self.dead = True
        if self._waiter is None:
            return
        if self._headers_done and self._until_close():
            self._finish()  # the end of the connection is the end of the body
        else:
            self._fail(ConnectionLost("connection closed before the reply was complete"))

    def _until_close(self) -> bool:
        headers = self._headers
        return "content-length" not in headers and "chunked" not in headers.get(
            "transfer-encoding", ""
        )

    # -- httptools callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._waiter is None:
            # A reply nobody asked for (a 408 before an idle close, or garbage): a later
            # request's reply could no longer be told from it.
            self.dead = True

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        seen = self._headers.get(key)
        self._headers[key] = text if seen is None else f"{seen}, {text}"

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._status < 200:  # 1xx: the real reply follows on the same connection
            self._headers, self._body, self._headers_done = {}, [], False
            return
        if not self._parser.should_keep_alive():
            self.dead = True
        self._finish()

    # -- outcomes --------------------------------------------------------------------------

    def _finish(self) -> None:
        waiter = self._waiter
        response = Response(self._status, self._headers, b"".join(self._body))
        self._reset()
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    def _fail(self, error: HTTPError) -> None:
        waiter = self._waiter
        self._reset()
        self.abort()
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    def _timed_out(self) -> None:
        self._timer = None
        self._fail(ReplyTimeout("no complete reply within the read timeout"))

    def _reset(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._waiter = None
        self._headers, self._body, self._headers_done = {}, [], False


class _Origin:
    """The connections to one (scheme, host, port): idle ones and a cap on all of them."""

    def __init__(self, pool: HTTPPool, host: str, port: int, tls: ssl.SSLContext | None) -> None:
        self._pool = pool
        self._host = host
        self._port = port
        self._tls = tls
        self._idle: list[_Connection] = []
        self._count = 0  # idle + in use + being opened
        self._waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self.connections: set[_Connection] = set()

    async def acquire(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        idle = self._idle
        if idle:
            now = loop.time()
            while idle:
                conn = idle.pop()  # the most recent: the least likely to be closed
                if conn.usable and now - conn.idle_since < self._pool.idle_limit:
                    return conn
                conn.close()
                self._count -= 1
        if self._count < self._pool.max_connections:
            self._count += 1
        else:
            handed = await self._wait(loop)
            if handed is not None:
                if handed.usable:
                    return handed
                handed.close()  # the peer closed it as it was handed over: replace it
        # We hold a slot: open a connection in it, or give the slot back.
        try:
            return await self._connect(loop)
        except BaseException:
            self._free_slot()
            raise

    def release(self, conn: _Connection, loop: asyncio.AbstractEventLoop) -> None:
        if not conn.usable or self._pool.closed:
            conn.close()  # a failed exchange aborted it already: then this does nothing
            self._free_slot()
            return
        conn.idle_since = loop.time()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._idle.append(conn)

    def close(self) -> None:
        for conn in list(self.connections):
            conn.close()
        self._idle.clear()

    async def _wait(self, loop: asyncio.AbstractEventLoop) -> _Connection | None:
        """Wait for a connection (or a free slot: None) that another call hands over."""
        waiter: asyncio.Future[_Connection | None] = loop.create_future()
        self._waiters.append(waiter)
        timer = loop.call_later(self._pool.pool_timeout, _expire, waiter)
        try:
            return await waiter
        except BaseException:
            # Cancelled just after being handed something: hand it on, or it leaks.
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                handed = waiter.result()
                if handed is None:
                    self._free_slot()
                else:
                    self.release(handed, loop)
            raise
        finally:
            timer.cancel()

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        conn = _Connection(loop)
        try:
            async with asyncio.timeout(self._pool.connect_timeout):
                await loop.create_connection(
                    lambda: conn,
                    self._host,
                    self._port,
                    ssl=self._tls,
                    server_hostname=self._host if self._tls is not None else None,
                )
        except TimeoutError:
            raise ConnectFailed("connect timeout") from None
        except OSError as exc:  # refused, unreachable, DNS, TLS (ssl.SSLError is an OSError)
            raise ConnectFailed(type(exc).__name__) from None
        self.connections.add(conn)
        conn.closed.add_done_callback(lambda _: self.connections.discard(conn))
        return conn

    def _free_slot(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes to the waiter
                return
        self._count -= 1


def _expire(waiter: asyncio.Future[_Connection | None]) -> None:
    if not waiter.done():
        waiter.set_exception(PoolTimeout("no free connection within the pool timeout"))


class HTTPPool:
    """Keep-alive connections per (scheme, host, port), shared by a whole process.

    ``read_timeout`` bounds a whole exchange, from writing the request to the reply's last
    byte; ``pool_timeout`` (default: ``connect_timeout``) bounds the wait for one of
    ``max_connections`` per origin. Use it from one event loop; ``aclose()`` at exit.
    """

    def __init__(
        self,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 20.0,
        pool_timeout: float | None = None,
        max_connections: int = 50,
        idle_limit: float = 4.0,
        ssl_context: ssl.SSLContext | None = None,
        user_agent: str = "cryptolens-bridge",
    ) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.pool_timeout = connect_timeout if pool_timeout is None else pool_timeout
        self.max_connections = max_connections
        self.idle_limit = idle_limit
        self._ssl_context = ssl_context
        self._user_agent = user_agent
        self._origins: dict[tuple[str, str, int], _Origin] = {}
        # url -> (its origin, the request's bytes up to the Content-Length value)
        self._routes: dict[str, tuple[_Origin, bytes]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed = False

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """The context for https: the one given, or the system's trust store, made once."""
        if self._ssl_context is None:
            context = ssl.create_default_context()
            context.set_alpn_protocols(["http/1.1"])
            self._ssl_context = context
        return self._ssl_context

    async def post_form(self, url: str, form: Mapping[str, str]) -> Response:
        if self.closed:
            raise NotSent("the HTTP pool is closed")
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._rebind(loop)
        route = self._routes.get(url) or self._route(url)
        origin, head = route
        body = encode_form(form)
        request = b"%s%d\r\n\r\n%s" % (head, len(body), body)
        conn = await origin.acquire(loop)
        try:
            response = await conn.send(request, self.read_timeout)
        except BaseException:
            conn.abort()  # a timeout, a loss, or our caller cancelled mid-exchange
            raise
        finally:
            origin.release(conn, loop)
        return response

    async def aclose(self) -> None:
        """Close every connection; calls after this raise :class:`NotSent`."""
        self.closed = True
        waiting = [c.closed for o in self._origins.values() for c in o.connections]
        for origin in self._origins.values():
            origin.close()
        if waiting:
            # Let the transports finish closing their sockets while the loop still runs;
            # TLS close_notify waits for the peer, so bound it and abort the rest.
            _, pending = await asyncio.wait(waiting, timeout=1.0)
            for origin in self._origins.values():
                for conn in list(origin.connections):
                    conn.abort()
            if pending:
                await asyncio.wait(pending, timeout=0.1)

    def _rebind(self, loop: asyncio.AbstractEventLoop) -> None:
        # Connections belong to the loop that opened them; a new loop starts afresh.
        if self._loop is not None and not self._loop.is_closed():
            for origin in self._origins.values():
                origin.close()
        self._origins.clear()
        self._routes.clear()
        self._loop = loop

    def _route(self, url: str) -> tuple[_Origin, bytes]:
        try:
            parts = urlsplit(url)
            scheme, host, port = parts.scheme.lower(), parts.hostname, parts.port
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            target.encode("ascii")
        except ValueError:  # a bad port, or a path that is not ASCII
            raise NotSent("malformed URL") from None
        if scheme not in ("http", "https") or not host:
            raise NotSent(f"unsupported URL scheme or host: {scheme}://")
        port = port or (443 if scheme == "https" else 80)
        key = (scheme, host, port)
        origin = self._origins.get(key)
        if origin is None:
            tls = self.ssl_context if scheme == "https" else None
            origin = self._origins[key] = _Origin(self, host, port, tls)
        head = (
            f"POST {target} HTTP/1.1\r\n"
            f"Host: {parts.netloc.rpartition('@')[2]}\r\n"
            f"User-Agent: {self._user_agent}\r\n"
            "Accept: application/json\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            "Content-Length: "
        ).encode("ascii")
        if len(self._routes) >= 256:  # URLs are base + method: a handful, unless misused
            self._routes.clear()
        route = self._routes[url] = (origin, head)
        return route

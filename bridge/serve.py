"""``cryptolens-bridge serve``: the webhook receiver under uvicorn."""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from typing import Any

import click
import uvicorn
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from bridge.app import create_app
from bridge.core import logs
from bridge.core.errors import ConfigError
from bridge.core.settings import Settings


@dataclass(frozen=True)
class ConnectionLimits:
    """What one client may hold of a server process before it is answered (seconds, bytes)."""

    max_head_bytes: int
    head_timeout: float
    body_timeout: float


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the bounds uvicorn leaves out.

    uvicorn arms its keep-alive timer only after a response, and httptools keeps a
    header however long it grows: a connection that sends nothing, or a head (or a body)
    a byte at a time, stayed open for good, and an endless header line grew the process
    by its size. So a request's head must be complete ``head_timeout`` after the
    connection opened or the previous response ended, and at most ``max_head_bytes``
    long (431); its body must be complete ``body_timeout`` after its head (408).

    Why not h11, which bounds the head itself (``h11_max_incomplete_event_size``)? It
    has no deadline either, so this class would be needed all the same, and it parses in
    Python: httptools (C) keeps the per-request cost the bench measures.
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: ConnectionLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        # Waiting for a request's head, or reading one (not its body).
        self._in_head = True
        self._head_started = False
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(self.limits.head_timeout, self._head_late)

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._in_head:
            super().data_received(data)
            return
        if self.transport.is_closing():
            return
        # Feed no more than the head may still take; what follows it (its body, the
        # next request) is fed once the head has ended within that.
        room = self.limits.max_head_bytes - self._head_bytes
        super().data_received(data[:room] if len(data) > room else data)
        if self._in_head:
            self._head_bytes += min(len(data), room)
            if len(data) > room and not self.transport.is_closing():
                self._refuse(431, "Request header fields too large.")
        elif len(data) > room and not self.transport.is_closing():
            super().data_received(data[room:])

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_started = True

    def on_headers_complete(self) -> None:
        self._in_head, self._head_started, self._head_bytes = False, False, 0
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._body_timer = self.loop.call_later(self.limits.body_timeout, self._body_late)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head = True
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            if self._head_timer is not None:
                self._head_timer.cancel()
            self._head_timer = self.loop.call_later(self.limits.head_timeout, self._head_late)

    def _head_late(self) -> None:
        self._head_timer = None
        busy = self.pipeline or (self.cycle is not None and not self.cycle.response_complete)
        if self.transport.is_closing() or not self._in_head or busy:
            return  # a request is being answered; its response re-arms the deadline
        if self._head_started:
            self._refuse(408, "Request header timeout.")
        else:
            self.transport.close()  # idle: nothing to answer

    def _body_late(self) -> None:
        self._body_timer = None
        if self.transport.is_closing() or self._in_head:
            return
        cycle = self.cycle
        if cycle is not None and cycle.response_started:
            self.transport.close()  # answered already (a 413, say): stop reading
            return
        if cycle is not None:  # the app, waiting for the body, hears a disconnect
            cycle.disconnected = True
            cycle.message_event.set()
        self._refuse(408, "Request body timeout.")

    def _refuse(self, status: int, message: str) -> None:
        """Answer ``status`` with ``message`` and close, whatever the parser's state."""
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        body = message.encode("ascii")
        content.extend(
            [
                b"content-type: text/plain; charset=utf-8\r\n",
                b"content-length: %d\r\n" % len(body),
                b"connection: close\r\n\r\n",
                body,
            ]
        )
        self.transport.write(b"".join(content))
        self.transport.close()


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The server options, shared with the bench's bare reference endpoint so that the
    two are compared under the same server. uvloop and httptools come with
    uvicorn[standard]."""
    limits = ConnectionLimits(
        max_head_bytes=settings.max_header_bytes,
        head_timeout=settings.header_timeout,
        body_timeout=settings.body_timeout,
    )
    return {
        "loop": "uvloop",
        # A partial of a module-level class: ``--workers`` pickles it to each process.
        "http": functools.partial(BoundedHttpToolsProtocol, limits=limits),
        "ws": "none",
        "lifespan": "on",
        "log_level": "warning",
        "access_log": False,
        # Past this many open connections a request is answered 503 (uvicorn counts at
        # each request's head); the head deadline closes the ones that never send one.
        "limit_concurrency": settings.max_connections,
        "timeout_keep_alive": settings.keep_alive_timeout,
    }


def run(app: Any, host: str, port: int, settings: Settings | None = None) -> None:
    uvicorn.run(app, host=host, port=port, **uvicorn_options(settings or Settings()))


def app_from_environment() -> Any:
    """The app each uvicorn worker process builds for itself (``--workers`` > 1)."""
    settings = Settings()
    logs.configure(settings.log_level)
    logs.register_secrets(settings.stripe_webhook_secret.get_secret_value().split(","))
    return create_app(settings, serve_operator=True)


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help=(
        "Server processes; each has its own database pool and group commit. For "
        "PostgreSQL: on SQLite they queue on its write lock, and one is faster."
    ),
)
def command(host: str, port: int, workers: int) -> None:
    """Receive webhooks (STRIPE_WEBHOOK_SECRET, BRIDGE_DATABASE_URL, BRIDGE_REDIS_URL).

    /metrics and the detailed /readyz: on BRIDGE_METRICS_ADDRESS (127.0.0.1:9464)."""
    settings = Settings()
    logs.configure(settings.log_level)
    logs.register_secrets(settings.stripe_webhook_secret.get_secret_value().split(","))
    try:
        # Validates the secrets before anything listens; metrics go to the operator address.
        app = create_app(settings, serve_operator=True)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if workers == 1:
        run(app, host, port, settings)
        return
    uvicorn.run(
        "bridge.serve:app_from_environment",
        factory=True,
        workers=workers,
        host=host,
        port=port,
        **uvicorn_options(settings),
    )

"""The operator's address: ``/metrics`` and a detailed ``/readyz``, off the webhook port.

The webhook port is open to anyone, and its metrics told anyone the sales volume by
provider, the CRM sources configured, the queue's depth; each scrape also read the
database. So ``serve`` answers them on ``BRIDGE_METRICS_ADDRESS`` (127.0.0.1:9464 by
default: only this host, where Prometheus or its agent runs), a small second server in
each web process sharing the app's state. The webhook port keeps ``/readyz`` for load
balancers, answering only ready or not.

With ``serve --workers N`` every process binds the address (SO_REUSEPORT) and the
kernel hands each scrape to one of them, as the webhook port does with requests: the
counters are that process's, the gauges the database's.
"""

from __future__ import annotations

import asyncio
import functools
import socket
from typing import Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from bridge.core.errors import ConfigError
from bridge.core.logs import get_logger
from bridge.state import AppState
from bridge.store import db, stats

log = get_logger(__name__)

OPERATOR_CONNECTIONS = 16


def parse_address(value: str, name: str) -> tuple[str, int] | None:
    """``host:port`` (``[v6]:port`` for IPv6); None for empty or ``off``."""
    value = value.strip()
    if not value or value.lower() == "off":
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host or int(port) > 65535:
        raise ConfigError(f"{name}={value!r}: expected host:port (127.0.0.1:9464), or off")
    return host.strip("[]"), int(port)


async def checks(state: AppState) -> dict[str, str]:
    """The database and Redis, each ``ok`` or why not (two seconds each at most). Redis's
    answer also feeds this process's outage record (logged once per outage)."""
    found: dict[str, str] = {}
    try:
        await asyncio.wait_for(asyncio.to_thread(db.ping, state.engine), 2)
        found["database"] = "ok"
    except Exception as exc:
        found["database"] = f"unavailable: {type(exc).__name__}"
    try:
        if state.redis is None:
            raise RuntimeError("not configured")
        await asyncio.wait_for(state.redis.ping(), 2)
        found["redis"] = "ok"
        state.redis_outage.answered()
    except Exception as exc:
        found["redis"] = f"unavailable: {type(exc).__name__}"
        state.redis_outage.failed(exc)
    return found


async def readyz(request: Request) -> Response:
    state: AppState = request.state.bridge
    found = await checks(state)
    ready = all(v == "ok" for v in found.values())
    extra: dict[str, float] = {}
    if found["redis"] != "ok":
        # Deliveries are still stored and acknowledged; the worker re-queues them when
        # Redis is back. How long it has been away, as this process has seen it:
        extra["redis_unavailable_seconds"] = round(state.redis_outage.seconds(), 1)
    return JSONResponse({"ready": ready, **found, **extra}, status_code=200 if ready else 503)


async def metrics_endpoint(request: Request) -> Response:
    state: AppState = request.state.bridge
    await state.refresh_metrics(functools.partial(stats.intent_stats, state.engine), state.redis)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


class _WithState:
    """The operator app with the web app's state in every request's scope."""

    def __init__(self, app: Starlette, state: AppState) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["state"] = {"bridge": self.state}
        await self.app(scope, receive, send)


def operator_app(state: AppState) -> Any:
    routes = [
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]
    return _WithState(Starlette(routes=routes), state)


class Listener:
    """The operator app served on ``address`` within the web app's lifespan."""

    def __init__(self, state: AppState, address: tuple[str, int]) -> None:
        self.address = address
        # A few scrapers, not the internet: h11 bounds a request's head (16 KiB), and
        # past a handful of open connections a request is answered 503.
        self._config = uvicorn.Config(
            operator_app(state),
            http="h11",
            lifespan="off",
            log_level="warning",
            access_log=False,
            limit_concurrency=OPERATOR_CONNECTIONS,
            timeout_keep_alive=5,
        )
        self._server = uvicorn.Server(self._config)
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        """Where it listens (the port the system chose, for port 0)."""
        assert self._socket is not None
        host, port = self._socket.getsockname()[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"

    async def start(self) -> None:
        host, port = self.address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if hasattr(socket, "SO_REUSEPORT"):  # serve --workers N: each process binds it
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise ConfigError(
                f"BRIDGE_METRICS_ADDRESS {host}:{port} cannot be bound: {exc.strerror}"
            ) from None
        self._socket = sock
        # uvicorn's own steps minus its signal handlers and tick loop: the webhook
        # server around this one owns the signals and the process's end.
        self._config.load()
        self._server.lifespan = self._config.lifespan_class(self._config)
        await self._server.startup(sockets=[sock])
        log.info("operator address listening", url=self.url)

    async def stop(self) -> None:
        if self._socket is not None:
            await self._server.shutdown(sockets=[self._socket])
            self._socket = None

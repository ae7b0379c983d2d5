"""The web app: webhook endpoints, health, readiness and metrics.

``create_app(settings)`` refuses to build with an empty or placeholder webhook secret
(an empty secret verifies against an empty key, which anyone can forge). Shared clients
(the engine, the Redis handle) live in the lifespan, never per request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Engine, text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from bridge.core.batcher import Batcher
from bridge.core.db import make_engine
from bridge.core.queue import Enqueuer, connect
from bridge.core.settings import Settings
from bridge.core.state import AppState
from bridge.stripe import webhook as stripe_webhook
from bridge.usage import endpoint as usage_endpoint


def _ping_db(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


async def healthz(_: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    state: AppState = request.state.bridge
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(asyncio.to_thread(_ping_db, state.engine), 2)
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unavailable: {type(exc).__name__}"
    try:
        if state.redis is None:
            raise RuntimeError("not configured")
        await asyncio.wait_for(state.redis.ping(), 2)
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"unavailable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"ready": ready, **checks}, status_code=200 if ready else 503)


async def metrics_endpoint(_: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


WEBHOOK_PATH = "/webhooks/stripe"


class BridgeApp(Starlette):
    """Starlette, with ``POST /webhooks/stripe`` handed straight to its endpoint.

    The endpoint answers every request itself, errors included, so Starlette's error
    and exception middleware and its router (four layers, two of them wrapping each
    ``send``) would only cost time on the path that takes every webhook. Any other
    request, and any other spelling of that path, goes through Starlette as usual.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] == WEBHOOK_PATH
            and scope["method"] == "POST"
            and not scope.get("root_path")
        ):
            scope["app"] = self
            await stripe_webhook.endpoint(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings,
    *,
    engine: Engine | None = None,
    clock: Callable[[], float] = time.time,
) -> BridgeApp:
    """The app; ``clock`` (unix seconds) is what signatures are dated against."""
    secrets = settings.webhook_secrets()  # raises ConfigError before anything listens
    config = settings.bridge_config()
    usage_tokens = settings.usage_tokens_list()

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[dict[str, Any]]:
        own_engine = engine is None
        db_engine = engine or make_engine(settings.database_url)
        redis = connect(settings.redis_url)
        queue = Enqueuer(settings.redis_url)
        batcher = Batcher(db_engine, queue)
        state = AppState(settings, config, db_engine, redis, secrets, batcher, usage_tokens, clock)
        try:
            yield {"bridge": state}
        finally:
            await batcher.aclose()
            await queue.aclose()
            await redis.aclose()
            if own_engine:
                db_engine.dispose()

    routes = [
        Route(WEBHOOK_PATH, stripe_webhook.endpoint, methods=["POST"]),
        Route("/usage", usage_endpoint.post_usage, methods=["POST"]),
        Route("/usage/openapi.json", usage_endpoint.openapi, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]
    return BridgeApp(routes=routes, lifespan=lifespan)

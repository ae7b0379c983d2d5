"""The web app: webhook endpoints, health, readiness, metrics and (when on) ``/admin``.

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
from starlette.routing import BaseRoute, Route

from bridge import providers
from bridge.core import metrics
from bridge.core.batcher import Batcher
from bridge.core.db import make_engine
from bridge.core.deliverylog import DeliveryLog
from bridge.core.queue import Enqueuer, connect
from bridge.core.settings import ConfigError, Settings
from bridge.core.state import AppState
from bridge.cryptolens import CryptolensClient, make_http_client
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
    extra: dict[str, float] = {}
    try:
        if state.redis is None:
            raise RuntimeError("not configured")
        await asyncio.wait_for(state.redis.ping(), 2)
        checks["redis"] = "ok"
        state.redis_outage.answered()
    except Exception as exc:
        checks["redis"] = f"unavailable: {type(exc).__name__}"
        state.redis_outage.failed(exc)
        # Deliveries are still stored and acknowledged; the worker re-queues them when
        # Redis is back. How long it has been away, as this process has seen it:
        extra["redis_unavailable_seconds"] = round(state.redis_outage.seconds(), 1)
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"ready": ready, **checks, **extra}, status_code=200 if ready else 503)


async def metrics_endpoint(request: Request) -> Response:
    state: AppState = request.state.bridge
    await metrics.refresh(state.engine, state.redis)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def create_app(
    settings: Settings,
    *,
    engine: Engine | None = None,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """The app; ``clock`` (unix seconds) is what signatures are dated against."""
    secrets = settings.webhook_secrets()  # raises ConfigError before anything listens
    if not settings.webhook_sources():
        raise ConfigError(
            "no webhook source is configured: set STRIPE_WEBHOOK_SECRET (the endpoint's "
            "signing secret, whsec_...), or HUBSPOT_CLIENT_SECRET, PIPEDRIVE_WEBHOOK_USER and "
            "PIPEDRIVE_WEBHOOK_PASSWORD, CRM_SECRET_<SOURCE>, or BRIDGE_USAGE_TOKENS"
        )
    admin_token = settings.admin_token_value()  # None: the admin page is off (404)
    has_token = bool(settings.cryptolens_token.get_secret_value().strip())
    plan_token = settings.token() if admin_token is not None and has_token else None
    config = settings.bridge_config()
    usage_tokens = settings.usage_tokens_list()

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[dict[str, Any]]:
        own_engine = engine is None
        db_engine = engine or make_engine(settings.database_url)
        redis = connect(settings.redis_url)
        queue = Enqueuer(settings.redis_url)
        batcher = Batcher(db_engine, queue)
        deliveries = DeliveryLog(db_engine)
        state = AppState(
            settings,
            config,
            db_engine,
            redis,
            secrets,
            batcher,
            deliveries,
            usage_tokens=usage_tokens,
            clock=clock,
        )
        http = None
        if plan_token is not None:
            # The admin page's dry runs read Cryptolens: one client for the process.
            http = make_http_client(
                connect_timeout=settings.cryptolens_connect_timeout,
                read_timeout=settings.cryptolens_read_timeout,
                max_connections=4,
            )
            state.cryptolens = CryptolensClient(
                http, token=plan_token, base_url=settings.cryptolens_api_url
            )
        try:
            yield {"bridge": state}
        finally:
            await batcher.aclose()
            await deliveries.flush()
            if http is not None:
                await http.aclose()
            await queue.aclose()
            await redis.aclose()
            if own_engine:
                db_engine.dispose()

    # Every provider's endpoint is a route like any other: middleware added to the app
    # (tracing, metrics, proxy headers) sees every webhook.
    routes: list[BaseRoute] = [
        route for provider in providers.all_providers() for route in provider.routes(settings)
    ]
    routes += [
        Route("/usage", usage_endpoint.post_usage, methods=["POST"]),
        Route("/usage/openapi.json", usage_endpoint.openapi, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]
    if admin_token is not None:
        # Imported only when on: the webhook path never loads the operator's tooling.
        from bridge.admin import mount

        routes.append(mount(admin_token))
    return Starlette(routes=routes, lifespan=lifespan)

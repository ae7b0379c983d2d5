"""The web app: webhook endpoints, health, readiness and (when on) ``/admin``.

Metrics and the detailed readiness are served on the operator address
(``bridge.operator_port``), never on the webhook port.

``create_app(settings)`` refuses to build with an empty or placeholder webhook secret
(an empty secret verifies against an empty key, which anyone can forge). Shared clients
(the engine, the Redis handle) live in the lifespan, never per request.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bridge import operator_port, registry
from bridge.config import BridgeConfig
from bridge.core import metrics
from bridge.core.errors import ConfigError
from bridge.core.queue import Enqueuer, connect
from bridge.core.settings import Settings
from bridge.core.throttle import Throttle
from bridge.cryptolens import CryptolensClient, make_http_client
from bridge.state import AppState
from bridge.store.batcher import Batcher
from bridge.store.db import Engine, make_engine
from bridge.store.deliveries import DeliveryRecorder
from bridge.stripe import lookup as stripe_lookup
from bridge.usage import endpoint as usage_endpoint


async def healthz(_: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready or not, for a load balancer: what is down is told on the operator address."""
    found = await operator_port.checks(request.state.bridge)
    ready = all(v == "ok" for v in found.values())
    return JSONResponse({"ready": ready}, status_code=200 if ready else 503)


def create_app(
    settings: Settings,
    *,
    engine: Engine | None = None,
    clock: Callable[[], float] = time.time,
    serve_operator: bool = False,
) -> Starlette:
    """The app; ``clock`` (unix seconds) is what signatures are dated against.
    ``serve_operator``: also serve ``/metrics`` and the detailed ``/readyz`` on
    ``BRIDGE_METRICS_ADDRESS`` while the app runs (``serve`` does; tests ask for it)."""
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
    config = BridgeConfig.load(settings.config_path)
    usage_tokens = settings.usage_tokens_list()
    address = operator_port.parse_address(settings.metrics_address, "BRIDGE_METRICS_ADDRESS")

    @asynccontextmanager
    async def lifespan(running: Starlette) -> AsyncIterator[dict[str, Any]]:
        own_engine = engine is None
        db_engine = engine or make_engine(settings.database_url)
        redis = connect(settings.redis_url)
        queue = Enqueuer(settings.redis_url)
        batcher = Batcher(db_engine, queue)
        deliveries = DeliveryRecorder(db_engine)
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
            throttle=Throttle(clock),
            refresh_metrics=metrics.Refresher(clock),
        )
        listener = None
        if serve_operator and address is not None:
            listener = operator_port.Listener(state, address)
            await listener.start()
            running.state.operator = listener  # its url, for tests
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
            if listener is not None:
                await listener.stop()
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
        route for name in registry.names() for route in registry.web(name)(settings)
    ]
    routes += stripe_lookup.routes(config.stripe.license_lookup)
    routes += [
        Route("/usage", usage_endpoint.post_usage, methods=["POST"]),
        Route("/usage/openapi.json", usage_endpoint.openapi, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]
    if admin_token is not None:
        # Imported only when on: the webhook path never loads the operator's tooling.
        from bridge.admin import mount

        routes.append(mount(admin_token, settings.public_url))
    return Starlette(routes=routes, lifespan=lifespan)

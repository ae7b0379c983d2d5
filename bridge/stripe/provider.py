"""Stripe as a provider: ``POST /webhooks/stripe`` and the worker's template hook."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.routing import BaseRoute, Route

from bridge.core.providers import Provider, WorkerHooks
from bridge.core.settings import Settings
from bridge.stripe import api, webhook
from bridge.stripe.templates import final_template, resolve_template

PATH = "/webhooks/stripe"


def _routes(settings: Settings) -> Sequence[BaseRoute]:
    # No signing secret, no endpoint (404): unsigned data is never taken. A bridge for a
    # CRM alone needs none; create_app refuses to start with no source at all.
    if not settings.webhook_secrets():
        return []
    return [Route(PATH, webhook.endpoint, methods=["POST"])]


def _open(_: Settings) -> Any:
    return api.make_http_client()


async def _close(client: Any) -> None:
    await client.close_async()


PROVIDER = Provider(
    name="stripe",
    routes=_routes,
    worker=WorkerHooks(
        template=resolve_template, final_template=final_template, open=_open, close=_close
    ),
)

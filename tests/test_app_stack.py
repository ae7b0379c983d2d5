"""Every provider's endpoint goes through Starlette's router and middleware."""

from __future__ import annotations

import json

import httpx
from sqlalchemy import Engine
from starlette.types import ASGIApp, Receive, Scope, Send

from bridge.app import create_app
from bridge.core.settings import Settings
from bridge.core.signing import sign
from tests.fixtures import stripe_builders as sb
from tests.fixtures.pipeline import SECRET
from tests.fixtures.servers import run_asgi


class Seen:
    """A middleware added the way an operator would add tracing or metrics."""

    paths: list[str] = []

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            Seen.paths.append(f"{scope['method']} {scope['path']}")
        await self.app(scope, receive, send)


def test_middleware_sees_every_webhook(bridge_settings: Settings, engine: Engine) -> None:
    Seen.paths = []
    app = create_app(bridge_settings, engine=engine)
    app.add_middleware(Seen)
    body = json.dumps(sb.load("checkout.session.completed.payment")).encode()
    with run_asgi(app) as url:
        stripe = httpx.post(
            f"{url}/webhooks/stripe", content=body, headers={"Stripe-Signature": sign(body, SECRET)}
        )
        crm = httpx.post(f"{url}/webhooks/crm/unset", content=b"{}")
        hubspot = httpx.post(f"{url}/webhooks/hubspot", content=b"[]")
        wrong_method = httpx.get(f"{url}/webhooks/stripe")
    assert stripe.status_code == 200, stripe.text
    assert crm.status_code == 404  # no CRM_SECRET_UNSET: the source does not exist
    assert hubspot.status_code == 404  # no HUBSPOT_CLIENT_SECRET: no endpoint
    assert wrong_method.status_code == 405  # the router's answer, as on any route
    assert Seen.paths == [
        "POST /webhooks/stripe",
        "POST /webhooks/crm/unset",
        "POST /webhooks/hubspot",
        "GET /webhooks/stripe",
    ]

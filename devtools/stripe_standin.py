"""A stand-in for the Stripe API reads a subscription's key creation makes, for
``cryptolens-bridge bench --starts``.

``GET /v1/subscriptions/{id}`` answers the subscription posted to ``/standin/objects``,
``GET /v1/checkout/sessions?subscription=`` the Checkout Sessions posted there for it;
each answer after ``--latency-ms`` (a round trip to Stripe). ``GET /standin/state``
counts the reads. It checks no key: it is a local tool, never a test fake (the tests'
fake, tests/fixtures/fake_stripe.py, checks the key and keeps meter events).

    python -m devtools.stripe_standin --port 8792 --latency-ms 250
"""

from __future__ import annotations

import asyncio
from typing import Any

import click
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

_subscriptions: dict[str, dict[str, Any]] = {}
_sessions: list[dict[str, Any]] = []
_reads = {"subscriptions": 0, "checkout_sessions": 0}
_latency = {"seconds": 0.0}


async def objects(request: Request) -> Response:
    body = await request.json()
    for sub in body.get("subscriptions", []):
        _subscriptions[sub["id"]] = sub
    _sessions.extend(body.get("checkout_sessions", []))
    return JSONResponse({"subscriptions": len(_subscriptions), "sessions": len(_sessions)})


async def subscription(request: Request) -> Response:
    await asyncio.sleep(_latency["seconds"])
    _reads["subscriptions"] += 1
    sub = _subscriptions.get(request.path_params["id"])
    if sub is None:
        error = {"type": "invalid_request_error", "code": "resource_missing"}
        return JSONResponse({"error": {**error, "message": "No such subscription"}}, 404)
    return JSONResponse(sub)


async def sessions(request: Request) -> Response:
    await asyncio.sleep(_latency["seconds"])
    _reads["checkout_sessions"] += 1
    wanted = request.query_params.get("subscription")
    found = [s for s in _sessions if wanted in (None, s.get("subscription"))]
    listing = {"object": "list", "data": found, "has_more": False}
    return JSONResponse({**listing, "url": "/v1/checkout/sessions"})


async def state(_: Request) -> Response:
    return JSONResponse({"reads": _reads})


app = Starlette(
    routes=[
        Route("/v1/subscriptions/{id}", subscription, methods=["GET"]),
        Route("/v1/checkout/sessions", sessions, methods=["GET"]),
        Route("/standin/objects", objects, methods=["POST"]),
        Route("/standin/state", state, methods=["GET"]),
    ]
)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8792, show_default=True, type=int)
@click.option("--latency-ms", default=0.0, show_default=True, help="Before each API answer.")
def main(host: str, port: int, latency_ms: float) -> None:
    """Serve the Stripe API stand-in."""
    _latency["seconds"] = latency_ms / 1000
    uvicorn.run(app, host=host, port=port, log_level="warning")


if __name__ == "__main__":
    main()

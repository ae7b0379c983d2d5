"""The sandbox as a Starlette app: the Web API under ``/api/``, control under ``/sandbox/``.

Faults apply to API calls only; ``/sandbox/*`` always answers, so a test can watch and
steer the sandbox while it misbehaves for the code under test.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from bridge.sandbox.api import Api, Sandbox, anonymised, fast_entry
from bridge.sandbox.codes import KEY_CREATED
from bridge.sandbox.config import SandboxConfig
from bridge.sandbox.faults import FaultConfig, FaultError, Faults
from bridge.sandbox.store import Store
from bridge.sandbox.store_keys import subscription_item_for
from bridge.sandbox.store_records import NewKey


def _sandbox(request: Request) -> Sandbox:
    sandbox: Sandbox = request.app.state.sandbox
    return sandbox


async def show_state(request: Request) -> Response:
    sandbox = _sandbox(request)
    if request.query_params.get("view") == "progress":
        return JSONResponse(sandbox.store.progress())
    return JSONResponse({**sandbox.store.snapshot(), "faults": sandbox.faults.config.as_json()})


async def reset_state(request: Request) -> Response:
    _sandbox(request).store.reset()
    return JSONResponse({"reset": True})


async def set_faults(request: Request) -> Response:
    sandbox = _sandbox(request)
    if request.method == "POST":
        try:
            data = json.loads(await request.body() or b"{}")
            if not isinstance(data, dict):
                raise FaultError("send a JSON object")
            sandbox.faults.update(data)
        except (ValueError, FaultError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
    return JSONResponse(sandbox.faults.config.as_json())


async def link_subscription_item(request: Request) -> Response:
    """Link a key to a Stripe subscription item, as recurring billing does for the keys it
    makes, so that RecordUsage accepts it: ``{"product_id": 1001, "key": "...",
    "subscription_item": "si_..."}``; the item defaults to ``si_sandbox<globalId>``, and
    ``null`` unlinks the key."""
    store = _sandbox(request).store
    try:
        data = json.loads(await request.body() or b"{}")
        if not isinstance(data, dict):
            raise ValueError("send a JSON object")
        product_id, key = data.get("product_id"), data.get("key")
        if type(product_id) is not int or not isinstance(key, str):
            raise ValueError("give product_id (an integer) and key (a string)")
        item = data.get("subscription_item", "")
        if item is not None and not isinstance(item, str):
            raise ValueError("subscription_item is a string or null")
    except ValueError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    with store.transaction():
        record = store.find_key(product_id, key) if abs(product_id) < 2**63 else None
        if record is None:
            return JSONResponse({"error": "no such key"}, status_code=404)
        if item == "":
            item = subscription_item_for(record.global_id)
        store.link_subscription_item(record, item)
    return JSONResponse({"product_id": product_id, "key": key, "subscription_item": item})


async def foreign_key(request: Request) -> Response:
    """Create a key as another client of the vendor would (its back office, another
    integration), from the caller's network, logged as any creation is:
    ``{"template_id": 2}``, or ``{"product_id": 1001, "period": 30, "notes": "..."}``.
    Answers the key and its product."""
    sandbox = _sandbox(request)
    store = sandbox.store
    try:
        data = json.loads(await request.body() or b"{}")
        if not isinstance(data, dict):
            raise ValueError("send a JSON object")
        template_id, product_id = data.get("template_id"), data.get("product_id")
        notes, period = data.get("notes", ""), data.get("period", 0)
        if not isinstance(notes, str) or len(notes) > 500 or type(period) is not int:
            raise ValueError("notes is a string of at most 500 characters, period an integer")
        template = sandbox.config.template(template_id) if type(template_id) is int else None
        if template is None and (
            type(product_id) is not int or sandbox.config.product(product_id) is None
        ):
            raise ValueError("give a known template_id, or a known product_id")
    except ValueError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    client = request.client
    ip = anonymised(client.host if client else None)
    now = int(time.time())
    with store.transaction():
        if template is not None:
            record = store.create_key(template, now)
        else:
            assert type(product_id) is int
            spec = NewKey(product_id, period, (period > 0,) + (False,) * 7, notes=notes)
            record = store.new_key(spec, now)
        store.log(record, KEY_CREATED, ip, now)
    return JSONResponse({"product_id": record.product_id, "key": record.key})


class SandboxApp(Starlette):
    """Starlette, with API calls that name a method served by ``Api`` directly."""

    api: Api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        entry = fast_entry(scope)
        if entry is None:
            await super().__call__(scope, receive, send)
            return
        try:
            reply = await self.api.reply(entry, scope, receive)
        except Exception:
            # What Starlette's ServerErrorMiddleware does: a plain 500, then re-raise for
            # the server to log. Nothing has been sent yet: a Reply is sent whole.
            await PlainTextResponse("Internal Server Error", status_code=500)(scope, receive, send)
            raise
        await reply.send(send)


def create_app(
    config: SandboxConfig | None = None,
    *,
    db_path: Path | None = None,
    faults: FaultConfig | None = None,
) -> Starlette:
    """A sandbox app. State lives in memory, or in the SQLite file ``db_path`` so that it
    survives restarts; the store is closed when the app's lifespan ends."""
    config = config or SandboxConfig()
    sandbox = Sandbox(config, Store(config, db_path), Faults(faults))
    api = Api(sandbox)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            sandbox.store.close()

    routes = [
        Route("/sandbox/state", show_state, methods=["GET"]),
        Route("/sandbox/reset", reset_state, methods=["POST"]),
        Route("/sandbox/faults", set_faults, methods=["GET", "POST"]),
        Route("/sandbox/subscription-items", link_subscription_item, methods=["POST"]),
        Route("/sandbox/keys", foreign_key, methods=["POST"]),
        Route("/{path:path}", api, methods=["GET", "POST"]),
    ]
    app = SandboxApp(routes=routes, lifespan=lifespan)
    app.api = api
    app.state.sandbox = sandbox
    return app

"""The sandbox as a Starlette app: the Web API under ``/api/``, control under ``/sandbox/``.

Faults apply to API calls only; ``/sandbox/*`` always answers, so a test can watch and
steer the sandbox while it misbehaves for the code under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from bridge.sandbox import analytics, catalog, keys
from bridge.sandbox.call import Call, Handler
from bridge.sandbox.config import SandboxConfig
from bridge.sandbox.faults import FaultConfig, FaultError, Faults
from bridge.sandbox.params import ACCESS_DENIED, Params, Refusal
from bridge.sandbox.store import Store

# lower-cased "group/method" -> (canonical name, handler)
METHODS: dict[str, tuple[str, Handler]] = {
    name.lower(): (name, handler)
    for module in (keys, analytics, catalog)
    for name, handler in module.HANDLERS.items()
}


@dataclass
class Sandbox:
    config: SandboxConfig
    store: Store
    faults: Faults

    def run(self, name: str, handler: Handler, params: Params, ip: str) -> dict[str, Any]:
        """Apply one call in one transaction; a refusal is an answer, not an exception."""
        with self.store.transaction():
            self.store.count_call(name, "applied")
            token = self.config.token(params.string("token"))
            try:
                if token is None or not token.allows(name):
                    raise Refusal(ACCESS_DENIED)
                call = Call(params, token, self.store, self.config, ip, int(time.time()))
                body = handler(call)
            except Refusal as refusal:
                # Handlers refuse before they write, so there is nothing to undo.
                body = {"result": 1, "message": refusal.message}
            if body["result"] == 0:
                self.store.count_call(name, "succeeded")
        return body


class DroppedResponse(Response):
    """Announces the whole body, sends half, and returns: the server then closes the
    connection, and the client sees a reply cut off after the call was applied."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(self.body)).encode()),
                ],
            }
        )
        half = self.body[: len(self.body) // 2]
        await send({"type": "http.response.body", "body": half, "more_body": True})


def _method(path: str) -> str | None:
    # "/API//key/ExtendLicense/" -> "key/extendlicense"
    parts = [part for part in path.split("/") if part]
    if len(parts) < 2 or parts[0].lower() != "api":
        return None
    return "/".join(parts[1:]).lower()


def _anonymised(host: str | None) -> str:
    if not host:
        return ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)


async def _params(request: Request) -> Params:
    """Query string and body together (the body wins); a form body, or a JSON object."""
    values = dict(request.query_params)
    body = await request.body()
    if body:
        if request.headers.get("content-type", "").startswith("application/json"):
            try:
                data = json.loads(body)
            except ValueError:
                data = None
            if isinstance(data, dict):
                values.update({k: _wire(v) for k, v in data.items()})
        else:
            values.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    return Params(values)


def _wire(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _sandbox(request: Request) -> Sandbox:
    sandbox: Sandbox = request.app.state.sandbox
    return sandbox


async def api(request: Request) -> Response:
    entry = METHODS.get(_method(request.url.path) or "")
    if entry is None:
        message = f"The sandbox does not implement {request.url.path}."
        return JSONResponse({"result": 1, "message": message}, status_code=404)
    name, handler = entry
    sandbox = _sandbox(request)
    sandbox.store.count_call(name, "received")
    if sandbox.faults.config.latency_ms:
        await asyncio.sleep(sandbox.faults.config.latency_ms / 1000)
    fault = sandbox.faults.plan(name)
    # Error bodies carry only a message: the reference's sign of a server error.
    if fault == "fail_before":
        return JSONResponse({"message": "The service is unavailable."}, status_code=503)
    if fault == "rate_limit":
        return JSONResponse(
            {"message": "Too many requests."}, status_code=429, headers={"Retry-After": "1"}
        )
    params = await _params(request)
    client = request.client.host if request.client else None
    body = sandbox.run(name, handler, params, _anonymised(client))
    if sandbox.faults.config.reply_delay_ms:
        await asyncio.sleep(sandbox.faults.config.reply_delay_ms / 1000)
    if fault == "lost_reply":
        return JSONResponse({"message": "Gateway timeout."}, status_code=504)
    if fault == "drop":
        return DroppedResponse(json.dumps(body).encode())
    return JSONResponse(body)


async def show_state(request: Request) -> Response:
    sandbox = _sandbox(request)
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
        Route("/{path:path}", api, methods=["GET", "POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.sandbox = sandbox
    return app

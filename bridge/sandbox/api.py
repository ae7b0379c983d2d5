"""The Web API under ``/api/`` as a bare ASGI app: the sandbox's hot path.

Under load (the bench runs the sandbox on the cores of the code it measures) Starlette's
routing, middleware and Request/Response objects cost more than most calls do, so
``SandboxApp`` hands a request that plainly names a method (``fast_entry``) straight to
``Api.reply``. Everything else reaches the same ``Api`` through Starlette's router, whose
behaviour stays the reference: ``fast_entry`` only takes what that route would take.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from starlette.datastructures import URL
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive, Scope, Send

from bridge.sandbox import analytics, catalog, data, keys
from bridge.sandbox.call import Call, Handler
from bridge.sandbox.config import SandboxConfig
from bridge.sandbox.faults import Faults
from bridge.sandbox.params import ACCESS_DENIED, Params, Refusal
from bridge.sandbox.store import Store

# lower-cased "group/method" -> (canonical name, handler)
METHODS: dict[str, tuple[str, Handler]] = {
    name.lower(): (name, handler)
    for module in (keys, analytics, catalog, data)
    for name, handler in module.HANDLERS.items()
}
# canonical name -> the access token permission it needs, where that is not its own name
PERMISSIONS: dict[str, str] = {**keys.PERMISSIONS, **data.PERMISSIONS}

# Starlette's JSONResponse rendering, with the encoder built once instead of per call.
_encode: Callable[[Any], str] = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":")
).encode
_JSON = (b"content-type", b"application/json")
# Error bodies carry only a message: the reference's sign of a server error.
_UNAVAILABLE = _encode({"message": "The service is unavailable."}).encode()
_TOO_MANY = _encode({"message": "Too many requests."}).encode()
_GATEWAY_TIMEOUT = _encode({"message": "Gateway timeout."}).encode()


@dataclass
class Sandbox:
    config: SandboxConfig
    store: Store
    faults: Faults

    def run(self, name: str, handler: Handler, params: Params, ip: str) -> dict[str, Any]:
        """Apply one call in one transaction; a refusal is an answer, not an exception."""
        with self.store.transaction():
            token = self.config.token(params.string("token"))
            try:
                if token is None or not token.allows(PERMISSIONS.get(name, name)):
                    raise Refusal(ACCESS_DENIED)
                call = Call(params, token, self.store, self.config, ip, int(time.time()))
                body = handler(call)
            except Refusal as refusal:
                # Handlers refuse before they write, so there is nothing to undo.
                body = {"result": 1, "message": refusal.message}
            # Counted with the call's own writes: an exception rolls back both.
            self.store.count_call(name, applied=1, succeeded=int(body["result"] == 0))
        return body


@dataclass(frozen=True)
class Reply:
    """A whole response, built before anything is sent (so a failure can still be a 500).
    ``cut`` announces the whole body, sends half and returns: the server then closes the
    connection, and the client sees a reply cut off after the call was applied."""

    status: int
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()
    cut: bool = False

    async def send(self, send: Send) -> None:
        if self.cut:
            length = (b"content-length", str(len(self.body)).encode())
            start = {"type": "http.response.start", "status": 200, "headers": [_JSON, length]}
            await send(start)
            half = self.body[: len(self.body) // 2]
            await send({"type": "http.response.body", "body": half, "more_body": True})
            return
        headers = [*self.headers, (b"content-length", str(len(self.body)).encode()), _JSON]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


def method_of(path: str) -> str | None:
    # "/API//key/ExtendLicense/" -> "key/extendlicense"
    parts = [part for part in path.split("/") if part]
    if len(parts) < 2 or parts[0].lower() != "api":
        return None
    return "/".join(parts[1:]).lower()


def fast_entry(scope: Scope) -> tuple[str, Handler] | None:
    """The method, when Starlette would route this request to ``Api`` and ``Api`` would
    find the same method in ``URL(scope=scope).path`` as in the raw path: a GET or POST
    with no root path and a path of letters and slashes (a known method's path has nothing
    else) that does not start with "//" (a URL without a host reads that as a netloc)."""
    if scope["type"] != "http" or scope["method"] not in ("POST", "GET"):
        return None
    path: str = scope["path"]
    if scope.get("root_path") or not path.startswith("/") or path.startswith("//"):
        return None
    return METHODS.get(method_of(path) or "")


@functools.lru_cache(maxsize=1024)
def anonymised(host: str | None) -> str:
    """The client address as the Web API Log keeps it: the /24 (IPv4) or /48 network.
    Cached: a sandbox sees a handful of clients, each for thousands of calls."""
    if not host:
        return ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)


async def _body(receive: Receive) -> bytes:
    # As Starlette's Request.body(), without the Request.
    chunks: list[bytes] = []
    while True:
        message: Message = await receive()
        if message["type"] == "http.request":
            chunk = message.get("body", b"")
            if chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
        elif message["type"] == "http.disconnect":
            raise ClientDisconnect()


def _content_type(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"content-type":
            text: str = value.decode("latin-1")
            return text
    return ""


def _params(scope: Scope, body: bytes) -> Params:
    """Query string and body together (the body wins); a form body, or a JSON object."""
    query: bytes = scope["query_string"]
    values = form_fields(query.decode("latin-1")) if query else {}
    if body:
        if _content_type(scope).startswith("application/json"):
            try:
                data = json.loads(body)
            except ValueError:
                data = None
            if isinstance(data, dict):
                values.update({k: _wire(v) for k, v in data.items()})
        else:
            values.update(form_fields(body.decode("utf-8", "replace")))
    return Params(values)


def form_fields(text: str) -> dict[str, str]:
    """``dict(parse_qsl(text, keep_blank_values=True))``, the last value of a name winning,
    without parse_qsl's per-call argument coercion."""
    fields: dict[str, str] = {}
    for field in text.split("&"):
        if field:
            name, _, value = field.partition("=")
            fields[unquote(name.replace("+", " "))] = unquote(value.replace("+", " "))
    return fields


def _wire(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)


class Api:
    """The ASGI app for ``/api/...``, mounted as the catch-all route, and served without
    Starlette for the requests ``fast_entry`` accepts."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = URL(scope=scope).path
        entry = METHODS.get(method_of(path) or "")
        if entry is None:
            message = f"The sandbox does not implement {path}."
            body = _encode({"result": 1, "message": message}).encode()
            await Reply(404, body).send(send)
            return
        await (await self.reply(entry, scope, receive)).send(send)

    async def reply(self, entry: tuple[str, Handler], scope: Scope, receive: Receive) -> Reply:
        """Count, fault, apply: everything but sending the answer."""
        name, handler = entry
        sandbox = self.sandbox
        faults = sandbox.faults
        sandbox.store.count_call(name, received=1)
        if faults.config.latency_ms:
            await asyncio.sleep(faults.config.latency_ms / 1000)
        fault = faults.plan(name)
        if fault == "fail_before":
            return Reply(503, _UNAVAILABLE)
        if fault == "rate_limit":
            return Reply(429, _TOO_MANY, ((b"retry-after", b"1"),))
        if fault == "lost_request":
            return Reply(504, _GATEWAY_TIMEOUT)
        params = _params(scope, await _body(receive))
        client = scope.get("client")
        body = sandbox.run(name, handler, params, anonymised(client[0] if client else None))
        if faults.config.reply_delay_ms:
            await asyncio.sleep(faults.config.reply_delay_ms / 1000)
        if fault == "lost_reply":
            return Reply(504, _GATEWAY_TIMEOUT)
        if fault == "drop":
            return Reply(200, json.dumps(body).encode(), cut=True)
        return Reply(200, _encode(body).encode())

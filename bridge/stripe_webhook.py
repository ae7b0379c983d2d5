"""``POST /webhooks/stripe``: verify, record, enqueue, answer. Nothing else happens here.

    413  body over the limit                       nothing stored
    400  missing/garbled Stripe-Signature header,  nothing stored
         body that is not a Stripe event
    401  no signature matches, or a stale one      nothing stored
    503  the database cannot take the write        Stripe retries later
    200  recorded (or a duplicate, or a type we do not handle, recorded as ignored)

Errors answer ``{"error": ..., "detail": ...}``; a client gone before its body arrived
gets an empty 400.

Concurrent deliveries are stored in one transaction (``bridge.batcher``); each is
answered as if it had been stored alone. Redis being down after the commit still answers
200: the intents are in the database and the worker's relay queues them once Redis is back.

The endpoint is a plain ASGI app (Starlette routes it, POST only): its own work is a few
tens of microseconds, and a ``Request`` and a ``Response`` per delivery cost as much again.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import Receive, Scope, Send

from bridge import inbox, metrics
from bridge.logs import get_logger
from bridge.state import AppState
from bridge.stripe_plan import PayloadError, plan
from bridge.stripe_signature import InvalidSignature, MalformedHeader, verify

log = get_logger(__name__)

_OUTCOMES = (
    "duplicate",
    "ignored",
    "recorded",
    "too_large",
    "bad_signature_header",
    "bad_signature",
    "bad_json",
    "not_an_event",
    "bad_payload",
    "database_unavailable",
)
_COUNTERS = {o: metrics.WEBHOOKS.labels(provider="stripe", outcome=o) for o in _OUTCOMES}
_DUPLICATE, _IGNORED, _RECORDED = (
    _COUNTERS["duplicate"],
    _COUNTERS["ignored"],
    _COUNTERS["recorded"],
)
_JSON = b"application/json"


class _Refused(Exception):
    """A request answered with an error before anything is stored."""

    def __init__(self, status: int, error: str = "", detail: str = "") -> None:
        self.status, self.error, self.detail = status, error, detail


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    for name, value in scope["headers"]:
        if name == b"content-length":
            if value.isdigit() and int(value) > limit:
                raise _Refused(413, "too_large", f"body over {limit} bytes")
            break
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            raise _Refused(400)
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _Refused(413, "too_large", f"body over {limit} bytes")
        if not message.get("more_body", False):
            if not chunks:
                return chunk
            chunks.append(chunk)
            return b"".join(chunks)
        chunks.append(chunk)


def _signature_header(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"stripe-signature":
            header: str = value.decode("latin-1")
            return header
    return None


def _parse(body: bytes) -> Any:
    """The body's JSON value. orjson reads the UTF-8 JSON Stripe sends in a fifth of the
    standard library's time; whatever it refuses (a BOM, UTF-16/32, lone surrogates,
    NaN, nesting past 1024 levels) goes to ``json.loads``, which has the last word, so
    that what is accepted is exactly what ``json.loads`` accepts. (orjson reads an
    integer past 64 bits as a float; the planner refuses a float where it needs an int.)
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body)


def _delivery(state: AppState, scope: Scope, body: bytes) -> inbox.Delivery:
    """The verified, planned delivery in ``body``; raises :class:`_Refused`."""
    try:
        verify(
            body,
            _signature_header(scope),
            state.webhook_secrets,
            tolerance=state.settings.signature_tolerance,
            now=state.clock(),
        )
    except MalformedHeader as exc:
        raise _Refused(400, "bad_signature_header", str(exc)) from None
    except InvalidSignature as exc:
        raise _Refused(401, "bad_signature", str(exc)) from None

    try:
        event = _parse(body)
    except (ValueError, UnicodeDecodeError):
        raise _Refused(400, "bad_json", "the body is not JSON") from None
    except RecursionError:  # the parser recurses per level of nesting
        raise _Refused(400, "bad_json", "the body is nested too deeply") from None
    if not (
        type(event) is dict
        and isinstance(event.get("id"), str)
        and isinstance(event.get("type"), str)
        and isinstance(event.get("data"), dict)
    ):
        raise _Refused(400, "not_an_event", "expected a Stripe event with id, type and data")
    try:
        implied = plan(event, state.config.stripe)
    except PayloadError as exc:
        # Verified but not understood: refuse without storing, so Stripe redelivers it
        # once the bridge is fixed, instead of accepting and dropping it.
        log.warning("stripe event not understood", event_id=event["id"], error=str(exc))
        raise _Refused(400, "bad_payload", str(exc)) from None
    api_version = event.get("api_version")
    try:
        # Redaction walks the payload recursively: a body the parser only just took
        # could still be too deep for it.
        payload = inbox.stored_body(body, event)
    except RecursionError:
        raise _Refused(400, "bad_json", "the body is nested too deeply") from None
    return inbox.Delivery(
        provider="stripe",
        external_id=event["id"],
        event_type=event["type"],
        api_version=api_version if isinstance(api_version, str) else None,
        livemode=bool(event.get("livemode")),
        payload=payload,
        plan=implied,
    )


async def _answer(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-length", b"%d" % len(body))]
    if body:
        headers.append((b"content-type", _JSON))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _refuse(send: Send, refused: _Refused) -> None:
    if not refused.error:
        await _answer(send, refused.status, b"")
        return
    _COUNTERS[refused.error].inc()
    problem = {"error": refused.error, "detail": refused.detail}
    body = json.dumps(problem, ensure_ascii=False, separators=(",", ":"))
    await _answer(send, refused.status, body.encode())


class StripeWebhook:
    """The ASGI app behind ``POST /webhooks/stripe`` (state from the app's lifespan)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state: AppState = scope["state"]["bridge"]
        try:
            body = await _read_body(scope, receive, state.settings.max_body_bytes)
            delivery = _delivery(state, scope, body)
        except _Refused as refused:
            await _refuse(send, refused)
            return
        try:
            # Shares one transaction and one Redis round trip with concurrent deliveries;
            # answers once this delivery is committed (and its intents enqueued, or left
            # to the relay if Redis failed).
            recorded = await state.batcher.record(delivery)
        except SQLAlchemyError:  # logged by the batcher
            await _refuse(send, _Refused(503, "database_unavailable", "try again later"))
            return
        if recorded.duplicate:
            _DUPLICATE.inc()
        elif delivery.plan.ignored:
            _IGNORED.inc()
        else:
            _RECORDED.inc()
        await _answer(
            send,
            200,
            b'{"received":true,"duplicate":%s,"intents":%d}'
            % (b"true" if recorded.duplicate else b"false", len(recorded.new_intents)),
        )


endpoint = StripeWebhook()

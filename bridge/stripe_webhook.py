"""``POST /webhooks/stripe``: verify, record, enqueue, answer. Nothing else happens here.

    413  body over the limit                       nothing stored
    400  missing/garbled Stripe-Signature header,  nothing stored
         body that is not a Stripe event
    401  no signature matches, or a stale one      nothing stored
    503  the database cannot take the write        Stripe retries later
    200  recorded (or a duplicate, or a type we do not handle, recorded as ignored)

Concurrent deliveries are stored in one transaction (``bridge.batcher``); each is
answered as if it had been stored alone. Redis being down after the commit still answers
200: the intents are in the database and the worker's relay queues them once Redis is back.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from bridge import inbox, metrics
from bridge.logs import get_logger
from bridge.state import AppState
from bridge.stripe_plan import PayloadError, plan
from bridge.stripe_signature import InvalidSignature, MalformedHeader, verify

log = get_logger(__name__)

_DUPLICATE, _IGNORED, _RECORDED = (
    metrics.WEBHOOKS.labels(provider="stripe", outcome=outcome)
    for outcome in ("duplicate", "ignored", "recorded")
)


class BodyTooLarge(Exception):
    pass


async def read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _problem(status: int, error: str, detail: str) -> JSONResponse:
    metrics.WEBHOOKS.labels(provider="stripe", outcome=error).inc()
    return JSONResponse({"error": error, "detail": detail}, status_code=status)


async def receive(request: Request) -> Response:
    state: AppState = request.state.bridge
    try:
        body = await read_limited(request, state.settings.max_body_bytes)
    except BodyTooLarge:
        return _problem(413, "too_large", f"body over {state.settings.max_body_bytes} bytes")
    except ClientDisconnect:
        return Response(status_code=400)

    try:
        verify(
            body,
            request.headers.get("stripe-signature"),
            state.webhook_secrets,
            tolerance=state.settings.signature_tolerance,
        )
    except MalformedHeader as exc:
        return _problem(400, "bad_signature_header", str(exc))
    except InvalidSignature as exc:
        return _problem(401, "bad_signature", str(exc))

    try:
        event: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return _problem(400, "bad_json", "the body is not JSON")
    if not (
        isinstance(event, dict)
        and isinstance(event.get("id"), str)
        and isinstance(event.get("type"), str)
        and isinstance(event.get("data"), dict)
    ):
        return _problem(400, "not_an_event", "expected a Stripe event with id, type and data")
    try:
        implied = plan(event, state.config.stripe)
    except PayloadError as exc:
        # Verified but not understood: refuse without storing, so Stripe redelivers it
        # once the bridge is fixed, instead of accepting and dropping it.
        log.warning("stripe event not understood", event_id=event["id"], error=str(exc))
        return _problem(400, "bad_payload", str(exc))

    delivery = inbox.Delivery(
        provider="stripe",
        external_id=event["id"],
        event_type=event["type"],
        api_version=_str_or_none(event.get("api_version")),
        livemode=bool(event.get("livemode")),
        payload=inbox.stored_body(body, event),
        plan=implied,
    )
    try:
        # Shares one transaction and one Redis round trip with concurrent deliveries;
        # answers once this delivery is committed (and its intents enqueued, or left to
        # the relay if Redis failed).
        recorded = await state.batcher.record(delivery)
    except SQLAlchemyError:  # logged by the batcher
        return _problem(503, "database_unavailable", "try again later")

    outcome = _DUPLICATE if recorded.duplicate else _IGNORED if implied.ignored else _RECORDED
    outcome.inc()
    return Response(
        b'{"received":true,"duplicate":%s,"intents":%d}'
        % (b"true" if recorded.duplicate else b"false", len(recorded.new_intents)),
        media_type="application/json",
    )


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None

"""``POST /webhooks/stripe``: verify, record, enqueue, answer. Nothing else happens here.

    413  body over the limit                       nothing stored
    400  missing/garbled Stripe-Signature header,  nothing stored
         body that is not a Stripe event
    401  no signature matches, or a stale one      nothing stored
    503  the database cannot take the write        Stripe retries later
    200  recorded (or a duplicate, or a type we do not handle, recorded as ignored)

Redis being down after the commit still answers 200: the intents are in the database
and the worker's relay queues them once Redis is back.
"""

from __future__ import annotations

import asyncio
import functools
import json
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from bridge import inbox, metrics
from bridge.db import is_sqlite
from bridge.logs import get_logger
from bridge.queue import enqueue
from bridge.state import AppState
from bridge.stripe_plan import PayloadError, plan
from bridge.stripe_signature import InvalidSignature, MalformedHeader, verify

log = get_logger(__name__)

# How long a webhook may wait on Redis before we answer anyway (the relay has it).
ENQUEUE_TIMEOUT = 1.0


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

    store = functools.partial(
        inbox.record,
        state.engine,
        provider="stripe",
        external_id=event["id"],
        event_type=event["type"],
        api_version=_str_or_none(event.get("api_version")),
        livemode=bool(event.get("livemode")),
        payload=event,
        plan=implied,
    )
    try:
        # SQLite is a local file with one writer at a time: a thread per request would
        # only queue on its lock (and cost a loop turn); the commit itself takes well
        # under a millisecond. A database over the network gets a thread.
        recorded = store() if is_sqlite(state.engine) else await asyncio.to_thread(store)
    except SQLAlchemyError as exc:
        log.error("database unavailable; asking Stripe to retry", error=type(exc).__name__)
        return _problem(503, "database_unavailable", "try again later")

    if recorded.new_intents:
        await _enqueue(state, recorded.new_intents)
    outcome = "duplicate" if recorded.duplicate else ("ignored" if implied.ignored else "recorded")
    metrics.WEBHOOKS.labels(provider="stripe", outcome=outcome).inc()
    return JSONResponse(
        {"received": True, "duplicate": recorded.duplicate, "intents": len(recorded.new_intents)}
    )


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


async def _enqueue(state: AppState, intent_ids: list[str]) -> None:
    redis = state.redis
    if redis is None:
        return
    try:
        await asyncio.wait_for(enqueue(redis, intent_ids), ENQUEUE_TIMEOUT)
    except Exception as exc:  # any Redis trouble: the relay will queue them
        metrics.ENQUEUE_FAILURES.inc()
        log.warning(
            "enqueue failed; the relay will retry",
            error=type(exc).__name__,
            intents=len(intent_ids),
        )

"""What every CRM endpoint does around its own checks: read the body within the limit,
parse it as UTF-8 JSON, store the verified deliveries, answer.

Every CRM endpoint is a Starlette endpoint behind the app's router and middleware. A
refusal is a :class:`Refusal` (4xx, nothing stored); storing goes through the app's
batcher, so a delivery and its intents are one transaction, like Stripe's; a database
that cannot take the write answers 503 and the CRM delivers again. Refusals (with their
cause) and duplicates are noted in the app's delivery log here, for every CRM alike.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridge.core import metrics
from bridge.core.ingest import Refusal
from bridge.state import AppState
from bridge.store import payloads
from bridge.store.db import StoreError
from bridge.store.inbox import Delivery, Recorded


def state_of(request: Request) -> AppState:
    state: AppState = request.state.bridge
    return state


def parse_json(body: bytes) -> Any:
    """The body's JSON value, numbers with a fraction as :class:`Decimal` (an amount of
    25.30 stays 25.30); UTF-8 only, no byte order mark, no lone surrogate escaped."""
    if body.startswith(b"\xef\xbb\xbf") or b"\x00" in body:
        raise Refusal(400, "bad_encoding", "send UTF-8 JSON without a byte order mark")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Refusal(400, "bad_encoding", f"not valid UTF-8 (byte {exc.start})") from None
    try:
        value = json.loads(text, parse_float=Decimal, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise Refusal(400, "bad_json", f"the body is not JSON: {exc}") from None
    if _SURROGATE_ESCAPE.search(text) is not None and not _unicode(value):
        # A lone one (\ud800) is no character: nothing downstream can encode it, and a
        # 5xx for it would be retried for ever.
        raise Refusal(400, "bad_encoding", "a \\u escape names a lone surrogate")
    return value


def _unicode(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False, default=str).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def refuse(request: Request, provider: str, refused: Refusal) -> Response:
    if not refused.error:
        return Response(status_code=refused.status)
    metrics.WEBHOOKS.labels(provider=provider, outcome=refused.error).inc()
    state_of(request).deliveries.refused(provider, refused.cause, request.scope, refused.detail)
    return JSONResponse({"error": refused.error, "detail": refused.detail}, refused.status)


def stored_json(value: Any) -> str:
    """A payload (or one event of a batch) as stored: compact JSON, secrets redacted."""
    return json.dumps(payloads.redact(value), separators=(",", ":"), default=str)


async def record(
    request: Request, provider: str, deliveries: Sequence[Delivery]
) -> list[Recorded] | Response:
    """Store ``deliveries`` (one transaction when they arrive together); the records, or
    the 503 to answer when the database cannot take them."""
    state = state_of(request)
    try:
        recorded = await asyncio.gather(*(state.batcher.record(d) for d in deliveries))
    except StoreError:  # logged by the batcher; stored ones are duplicates next time
        return refuse(request, provider, Refusal(503, "database_unavailable", "try again later"))
    for delivery, outcome in zip(deliveries, recorded, strict=True):
        if outcome.duplicate:
            label = "duplicate"
            state.deliveries.duplicate(provider, request.scope, delivery.external_id)
        elif delivery.plan.ignored or not delivery.plan.intents:
            label = "ignored"
        else:
            label = "recorded"
        metrics.WEBHOOKS.labels(provider=provider, outcome=label).inc()
    return list(recorded)

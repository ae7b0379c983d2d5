"""``POST /usage``: authenticate, check each record, store the good ones, answer 202.

    404  no BRIDGE_USAGE_TOKENS configured: the endpoint does not exist
    401  no bearer token, or not one of BRIDGE_USAGE_TOKENS    nothing stored
    429  this client failed too often (bridge.core.throttle)   nothing stored; retry
         after Retry-After seconds (its token was not compared)
    413  body over BRIDGE_MAX_BODY_BYTES, or over 1,000 records nothing stored
    400  not a JSON object or array (or an empty array)        nothing stored
    503  the database cannot take the write                    nothing stored; retry
    202  per record: accepted, duplicate (its idempotency key was seen before, for the
         same record: nothing changes), conflict (the key was seen before for another
         product, key, meter or quantity: nothing changes), or refused with the reason
         (a timestamp out of range too); good records are stored whatever the others

Refusals are noted in the delivery log under ``usage`` with their cause (no_header,
malformed_header: not a bearer token, no_match: no token matches; too_large, bad_json,
...); refused, conflicting (idempotency_conflict) and duplicate records once per batch,
with their count.

``GET /usage/openapi.json`` serves the endpoint's OpenAPI description (no token needed:
it describes, it holds nothing). Like the webhook, the endpoint records and enqueues;
the aggregates' jobs are deferred to their windows' ends.
"""

from __future__ import annotations

import asyncio
import hmac
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridge.core.ingest import Refusal, read_body
from bridge.core.logs import get_logger
from bridge.core.queue import enqueue_deferred
from bridge.state import AppState
from bridge.store import ledger
from bridge.store.db import StoreError, is_sqlite
from bridge.store.tables import utcnow
from bridge.usage.config import UsageConfig
from bridge.usage.openapi import OPENAPI
from bridge.usage.records import Bad, Result, UsageIn, parse

log = get_logger(__name__)

MAX_BATCH = 1000


PROVIDER = "usage"  # its name in the delivery log
OUTCOMES = ("accepted", "duplicate", "conflict", "refused")
_CONFLICT = (
    "idempotency_key was used before for another product, key, meter or quantity:"
    " nothing changed (send a new record under a new key)"
)


def _error(status: int, error: str, detail: str, **headers: str) -> Response:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


def _refuse(
    request: Request, status: int, error: str, detail: str, cause: str = "", **headers: str
) -> Response:
    state: AppState = request.state.bridge
    state.deliveries.refused(PROVIDER, cause or error, request.scope, detail)
    return _error(status, error, detail, **headers)


def token_refusal(header: str | None, tokens: tuple[str, ...]) -> str | None:
    """Why ``Authorization`` names none of ``tokens`` (a delivery log cause), or None when
    ``Bearer <t>`` names one; compared in constant time against every one (no early exit
    tells which, or how much, matched)."""
    if not header or not header.strip():
        return "no_header"
    if header[:7].lower() != "bearer ":
        return "malformed_header"
    given = header[7:].strip().encode()
    found = False
    for token in tokens:
        found |= hmac.compare_digest(given, token.encode())
    return None if found else "no_match"


async def post_usage(request: Request) -> Response:
    state: AppState = request.state.bridge
    if not state.usage_tokens:
        return _error(404, "not_found", "usage reporting is not configured")
    client = state.client(request.scope)
    wait = state.throttle.wait(PROVIDER, client)
    if wait is not None:
        detail = f"too many failed credential checks: retry in {wait} s"
        return _refuse(request, 429, "throttled", detail, **{"Retry-After": str(wait)})
    cause = token_refusal(request.headers.get("authorization"), state.usage_tokens)
    if cause is not None:
        state.throttle.failed(PROVIDER, client)
        detail = "a bearer token from BRIDGE_USAGE_TOKENS is needed"
        return _refuse(request, 401, "unauthorized", detail, cause)
    state.throttle.succeeded(PROVIDER, client)
    try:
        body = await read_body(request.scope, request.receive, state.settings.max_body_bytes)
    except Refusal as refused:
        if not refused.error:  # the client went away: nobody to answer, nothing to note
            return Response(status_code=refused.status)
        return _refuse(request, refused.status, refused.error, refused.detail)
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _refuse(request, 400, "bad_json", "the body is not JSON")
    raw: list[Any] = payload if isinstance(payload, list) else [payload]
    if not isinstance(payload, list | dict) or not raw:
        detail = "send one record (an object) or a batch (an array)"
        return _refuse(request, 400, "bad_body", detail)
    if len(raw) > MAX_BATCH:
        return _refuse(request, 413, "too_many", f"at most {MAX_BATCH} records per request")

    usage = UsageConfig.of(state.config)
    results: list[Result | None] = []
    good: list[tuple[int, UsageIn]] = []
    for i, item in enumerate(raw):
        try:
            good.append((i, parse(item, usage)))
            results.append(None)
        except Bad as exc:
            key = item.get("idempotency_key") if isinstance(item, dict) else None
            results.append(
                Result(i, "refused", key if isinstance(key, str) else None, reason=str(exc))
            )
    if good:
        now = datetime.fromtimestamp(state.clock(), UTC)
        records = [r for _, r in good]
        try:
            if is_sqlite(state.engine):  # one local writer: a thread only adds a hop
                stored = ledger.record_many(state.engine, records, now=now, config=usage)
            else:
                stored = await asyncio.to_thread(
                    ledger.record_many, state.engine, records, now=now, config=usage
                )
        except StoreError as exc:
            log.error("storing usage failed", error=type(exc).__name__, records=len(records))
            return _refuse(
                request, 503, "database_unavailable", "nothing was stored", **{"Retry-After": "5"}
            )
        for (i, r), (outcome, aggregate) in zip(good, stored.results, strict=True):
            reason = _CONFLICT if outcome == "conflict" else None
            results[i] = Result(i, outcome, r.idempotency_key, aggregate, reason)
        await _enqueue(state, stored.opened)
    done = [r for r in results if r is not None]
    counts = {o: sum(r.outcome == o for r in done) for o in OUTCOMES}
    _note_batch(request, state, done, counts)
    return JSONResponse({**counts, "results": [r.json() for r in done]}, status_code=202)


def _note_batch(
    request: Request, state: AppState, done: list[Result], counts: dict[str, int]
) -> None:
    """Refused and duplicate records, once per batch each with their count: a reason can
    echo the record's own values, so it stays in the answer and out of the log."""
    of = f"of {len(done)} records"
    if counts["refused"]:
        detail = f"{counts['refused']} {of} refused"
        state.deliveries.refused(PROVIDER, "bad_records", request.scope, detail)
    if counts["conflict"]:
        detail = f"{counts['conflict']} {of} reused an idempotency key for other content"
        state.deliveries.refused(PROVIDER, "idempotency_conflict", request.scope, detail)
    if counts["duplicate"]:
        first = next(r.idempotency_key for r in done if r.outcome == "duplicate")
        detail = f"{counts['duplicate']} {of} seen before"
        state.deliveries.duplicate(PROVIDER, request.scope, first, detail)


async def _enqueue(state: AppState, opened: list[tuple[str, datetime]]) -> None:
    """Each new aggregate's job, deferred to its window's end."""
    if not opened or state.redis is None:
        return
    now = utcnow()  # Redis schedules by the wall clock, whatever the app's clock says
    await enqueue_deferred(state.redis, [(i, ledger.due_in(due, now)) for i, due in opened])


async def openapi(_: Request) -> Response:
    return Response(orjson.dumps(OPENAPI), media_type="application/json")

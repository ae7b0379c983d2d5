"""``POST /webhooks/stripe``: verify, record, enqueue, answer. Nothing else happens here.

    413  body over the limit                       nothing stored
    400  missing/garbled Stripe-Signature header,  nothing stored
         body that is not UTF-8 JSON (UTF-16/32,
         a byte order mark, invalid UTF-8), an
         integer outside signed 64 bits, a body
         that is not a Stripe event
    401  no signature matches, or a stale one      nothing stored
    503  the database cannot take the write        Stripe retries later
    200  recorded (or a duplicate, or a type we do not handle, recorded as ignored)

Errors answer ``{"error": ..., "detail": ...}``; a client gone before its body arrived
gets an empty 400. Each refusal (its cause: no_header, malformed_header, timestamp,
no_match, bad_json, ...; never its body) and each duplicate is noted in the bounded
delivery log (``bridge.store.deliveries``) that the admin page shows; noting is an append
to memory, written off the request's path.

Concurrent deliveries are stored in one transaction (``bridge.store.batcher``); each is
answered as if it had been stored alone. Redis being down after the commit still answers
200: the intents are in the database and the worker's relay queues them once Redis is back.

The endpoint is a plain ASGI app (Starlette routes it, POST only): its own work is a few
tens of microseconds, and a ``Request`` and a ``Response`` per delivery cost as much again.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Sequence
from typing import Any

import orjson
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from bridge.core import metrics, tracing
from bridge.core.ingest import Refusal, read_body
from bridge.core.logs import get_logger
from bridge.core.settings import Settings
from bridge.core.signing import InvalidSignature, MalformedHeader, verify
from bridge.mytracker.config import TrackerConfig
from bridge.state import AppState
from bridge.store import inbox, payloads
from bridge.store.db import StoreError
from bridge.stripe.config import StripeConfig
from bridge.stripe.plan import PayloadError, plan

log = get_logger(__name__)

_OUTCOMES = (
    "duplicate",
    "ignored",
    "recorded",
    "too_large",
    "bad_signature_header",
    "bad_signature",
    "bad_encoding",
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


def _signature_header(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"stripe-signature":
            header: str = value.decode("latin-1")
            return header
    return None


# UTF-32's marks first: UTF-32-LE's begins with UTF-16-LE's.
_BOMS = (
    codecs.BOM_UTF32_LE,
    codecs.BOM_UTF32_BE,
    codecs.BOM_UTF8,
    codecs.BOM_UTF16_LE,
    codecs.BOM_UTF16_BE,
)
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# Every digit as "1", every other byte as "0": an integer outside signed 64 bits has at
# least 19 digits in a row, and finding those in the translation is a C-speed scan (a
# regular expression for them took four times orjson's parse).
_DIGITS_AS_ONES = bytes(0x31 if 0x30 <= b <= 0x39 else 0x30 for b in range(256))
_NINETEEN_DIGITS = b"1" * 19


def _encoding_problem(body: bytes) -> str | None:
    """Why ``body`` is not UTF-8 text as JSON needs it, or None if it is."""
    if body.startswith(_BOMS):
        return "starts with a byte order mark"
    if b"\x00" in body:  # never in UTF-8 JSON; ASCII as UTF-16/32 is half NULs
        return "has NUL bytes (UTF-16 or UTF-32?)"
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"is not valid UTF-8 (byte {exc.start})"
    return None


def _int64(literal: str) -> int:
    value = int(literal)
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise Refusal(400, "bad_json", f"integer {literal} is outside the signed 64-bit range")
    return value


def _parse(body: bytes) -> Any:
    """The body's JSON value, or :class:`Refusal`.

    Stripe sends UTF-8 JSON, and orjson reads exactly that (RFC 8259, UTF-8 without a
    byte order mark, no lone surrogates, no NaN) in a fifth of the standard library's
    time. Nothing else is taken: UTF-16/32 text whose characters are ASCII also reads as
    UTF-8 with NULs, which hid secret keys from the redaction and which PostgreSQL
    refuses to store. orjson reads integers up to 2**64 - 1 as int and larger ones as
    float; the database's integers (and SQLite's) stop at 2**63 - 1, so a body with 19
    digits in a row is read again exactly, and an integer outside that range refused.
    """
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        problem = _encoding_problem(body)
        if problem is not None:
            raise Refusal(
                400,
                "bad_encoding",
                f"Stripe sends UTF-8 JSON without a byte order mark; this body {problem}",
            ) from None
        raise Refusal(400, "bad_json", f"the body is not JSON: {exc}") from None
    if body.translate(_DIGITS_AS_ONES).find(_NINETEEN_DIGITS) != -1:
        # Rare: mostly 19 digits inside a string. The standard library's parser gives
        # each integer's literal to ``parse_int``.
        value = json.loads(body, parse_int=_int64)
    return value


def _delivery(state: AppState, scope: Scope, body: bytes) -> inbox.Delivery:
    """The verified, planned delivery in ``body``; raises :class:`Refusal`."""
    try:
        verify(
            body,
            _signature_header(scope),
            state.webhook_secrets,
            tolerance=state.settings.signature_tolerance,
            now=state.clock(),
        )
    except MalformedHeader as exc:
        raise Refusal(400, "bad_signature_header", str(exc), exc.cause) from None
    except InvalidSignature as exc:
        raise Refusal(401, "bad_signature", str(exc), exc.cause) from None

    try:
        event = _parse(body)
    except RecursionError:  # the exact parser recurses per level of nesting
        raise Refusal(400, "bad_json", "the body is nested too deeply") from None
    if not (
        type(event) is dict
        and isinstance(event.get("id"), str)
        and isinstance(event.get("type"), str)
        and isinstance(event.get("data"), dict)
    ):
        raise Refusal(400, "not_an_event", "expected a Stripe event with id, type and data")
    try:
        implied = plan(event, StripeConfig.of(state.config), TrackerConfig.of(state.config))
    except PayloadError as exc:
        # Verified but not understood: refuse without storing, so Stripe redelivers it
        # once the bridge is fixed, instead of accepting and dropping it.
        log.warning("stripe event not understood", event_id=event["id"], error=str(exc))
        raise Refusal(400, "bad_payload", str(exc)) from None
    api_version = event.get("api_version")
    try:
        # Redaction walks the payload recursively: a body the parser only just took
        # could still be too deep for it.
        payload = payloads.stored_body(body, event)
    except RecursionError:
        raise Refusal(400, "bad_json", "the body is nested too deeply") from None
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


async def _refuse(state: AppState, scope: Scope, send: Send, refused: Refusal) -> None:
    if not refused.error:
        await _answer(send, refused.status, b"")
        return
    _COUNTERS[refused.error].inc()
    state.deliveries.refused("stripe", refused.cause, scope, refused.detail)
    problem = {"error": refused.error, "detail": refused.detail}
    body = json.dumps(problem, ensure_ascii=False, separators=(",", ":"))
    await _answer(send, refused.status, body.encode())


class StripeWebhook:
    """The ASGI app behind ``POST /webhooks/stripe`` (state from the app's lifespan)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state: AppState = scope["state"]["bridge"]
        try:
            body = await read_body(scope, receive, state.settings.max_body_bytes)
            delivery = _delivery(state, scope, body)
        except Refusal as refused:
            await _refuse(state, scope, send, refused)
            return
        try:
            # Shares one transaction and one Redis round trip with concurrent deliveries;
            # answers once this delivery is committed (and its intents enqueued, or left
            # to the relay if Redis failed).
            with tracing.span("delivery stripe", event=delivery.external_id):
                recorded = await state.batcher.record(delivery)
        except StoreError:  # logged by the batcher
            unavailable = Refusal(503, "database_unavailable", "try again later")
            await _refuse(state, scope, send, unavailable)
            return
        if recorded.duplicate:
            _DUPLICATE.inc()
            state.deliveries.duplicate("stripe", scope, delivery.external_id)
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


PATH = "/webhooks/stripe"


def routes(settings: Settings) -> Sequence[BaseRoute]:
    """The web half (``bridge.registry``). No signing secret, no endpoint (404): unsigned
    data is never taken. A bridge for a CRM alone needs none; create_app refuses to start
    with no source at all."""
    if not settings.webhook_secrets():
        return []
    return [Route(PATH, endpoint, methods=["POST"])]

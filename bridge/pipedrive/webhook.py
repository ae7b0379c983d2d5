"""``POST /webhooks/pipedrive``: check the Basic auth, store the delivery, answer.

404  no PIPEDRIVE_WEBHOOK_USER / PASSWORD                      (not mounted)
401  no or wrong credentials (compared in constant time)      nothing stored
     (noted as no_header, malformed_header: not Basic, not base64, no ':'; or
     no_match: the user or the password is wrong, which one is not told)
429  this client failed too often (bridge.core.throttle):     nothing stored
     Retry-After says when to try again; nothing was compared
413  body over the limit                                      nothing stored
400  not JSON, or no meta.id to store it under                nothing stored
503  the database cannot take it                              Pipedrive retries
200  stored once per meta.id; a delivery the bridge does not act on (one dated
     past our clock plus BRIDGE_SIGNATURE_TOLERANCE too) is stored as ignored, never
     refused: Pipedrive retries three times and then disables a webhook that keeps
     failing
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Sequence

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bridge.core.ingest import Refusal, read_body
from bridge.core.settings import Settings
from bridge.crm.ingest import parse_json, record, refuse, state_of, stored_json
from bridge.mytracker.config import TrackerConfig
from bridge.pipedrive import payload
from bridge.pipedrive.config import PipedriveConfig
from bridge.pipedrive.plan import SOURCE, plan
from bridge.store.inbox import Delivery


def auth_refusal(header: str | None, user: str, password: str) -> str | None:
    """Why ``Authorization`` does not carry the webhook's credentials (a delivery log
    cause), or None when it does."""
    if not header or not header.strip():
        return "no_header"
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return "malformed_header"
    try:
        given = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return "malformed_header"
    given_user, sep, given_password = given.partition(b":")
    if not sep:
        return "malformed_header"
    # Both compared, always: which one was wrong must not show in the timing.
    ok_user = hmac.compare_digest(given_user, user.encode())
    ok_password = hmac.compare_digest(given_password, password.encode())
    return None if ok_user and ok_password else "no_match"


async def endpoint(request: Request) -> Response:
    state = state_of(request)
    credentials = state.settings.pipedrive_credentials()
    client = state.client(request.scope)
    wait = state.throttle.wait(SOURCE, client)
    try:
        if wait is not None:
            detail = f"too many failed credential checks: retry in {wait} s"
            raise Refusal(429, "throttled", detail)
        cause = (
            "no_match"
            if credentials is None
            else auth_refusal(request.headers.get("authorization"), *credentials)
        )
        if cause is not None:
            state.throttle.failed(SOURCE, client)
            raise Refusal(
                401, "unauthorized", "HTTP Basic credentials of the webhook expected", cause
            )
        state.throttle.succeeded(SOURCE, client)
        body = await read_body(request.scope, request.receive, state.settings.max_body_bytes)
        parsed = parse_json(body)
        try:
            delivery = payload.read(parsed)
        except payload.NotADelivery as exc:
            raise Refusal(400, "bad_payload", str(exc)) from None
    except Refusal as refused:
        response = refuse(request, SOURCE, refused)
        if refused.status == 401:
            response.headers["WWW-Authenticate"] = 'Basic realm="cryptolens-bridge"'
        if wait is not None:
            response.headers["Retry-After"] = str(wait)
        return response
    stored = await record(
        request,
        SOURCE,
        [
            Delivery(
                provider=SOURCE,
                external_id=delivery.id,
                event_type=delivery.type[:100],
                api_version="webhooks-v2",
                livemode=True,
                payload=stored_json(parsed),
                plan=plan(
                    delivery,
                    PipedriveConfig.of(state.config),
                    TrackerConfig.of(state.config),
                    latest_ms=int((state.clock() + state.settings.signature_tolerance) * 1000),
                ),
            )
        ],
    )
    if isinstance(stored, Response):
        return stored
    [recorded] = stored
    return JSONResponse(
        {
            "received": True,
            "duplicate": recorded.duplicate,
            "intents": len(recorded.new_intents) + len(recorded.parked),
        }
    )


PATH = "/webhooks/pipedrive"


def routes(settings: Settings) -> Sequence[BaseRoute]:
    """The web half (``bridge.registry``). No webhook credentials, no endpoint (404):
    unauthenticated data is never taken."""
    if settings.pipedrive_credentials() is None:
        return []
    return [Route(PATH, endpoint, methods=["POST"])]

"""``POST /webhooks/hubspot``: verify the batch, store each event on its own, answer.

    404  no HUBSPOT_CLIENT_SECRET                                  (not mounted)
    413  body over the limit                                       nothing stored
    400  no signature header, a bad timestamp, a body that is
         not a JSON array of at most 100 events                    nothing stored
    401  no client secret matches (or the URI differs), stale      nothing stored
    503  the database cannot take the batch                        HubSpot retries
    200  every good event stored (deduplicated on its eventId); an event that is not
         one HubSpot sends is counted in "refused" and skipped: a retry cannot mend it

HubSpot retries a delivery on a 5xx or a timeout (its budget is 5 s) and not on a 4xx,
so 4xx is kept for requests refused for good. The URI HubSpot signed is the one it
called: behind a TLS proxy it is rebuilt from BRIDGE_PUBLIC_URL, or from
X-Forwarded-Proto/Host with BRIDGE_TRUST_FORWARDED; else the request's own.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridge.core.inbox import Delivery
from bridge.core.logs import get_logger
from bridge.core.settings import Settings
from bridge.crm.ingest import Refused, parse_json, read_body, record, refuse, state_of, stored_json
from bridge.hubspot import payload
from bridge.hubspot.plan import SOURCE, plan
from bridge.hubspot.signature import InvalidSignature, MalformedSignature, verify

log = get_logger(__name__)


def called_uri(request: Request, settings: Settings) -> str:
    """The URL HubSpot called, as it signed it."""
    path = request.url.path
    query = request.url.query
    tail = path + (f"?{query}" if query else "")
    if settings.public_url:
        return settings.public_url.rstrip("/") + tail
    proto = request.headers.get("x-forwarded-proto")
    host = request.headers.get("x-forwarded-host")
    if settings.trust_forwarded and proto and host:
        # A proxy chain appends: the first value is what the client called.
        return f"{proto.split(',')[0].strip()}://{host.split(',')[0].strip()}{tail}"
    return f"{request.url.scheme}://{request.headers.get('host', request.url.netloc)}{tail}"


async def endpoint(request: Request) -> Response:
    state = state_of(request)
    settings = state.settings
    try:
        body = await read_body(request, settings.max_body_bytes)
        try:
            verify(
                method=request.method,
                uri=called_uri(request, settings),
                body=body,
                headers=request.headers,
                secrets=settings.hubspot_secrets(),
                now_ms=int(state.clock() * 1000),
            )
        except MalformedSignature as exc:
            raise Refused(400, "bad_signature_header", str(exc)) from None
        except InvalidSignature as exc:
            raise Refused(401, "bad_signature", str(exc)) from None
        try:
            events = payload.read_batch(parse_json(body))
        except payload.BatchError as exc:
            raise Refused(400, "bad_payload", str(exc)) from None
    except Refused as refused:
        return refuse(SOURCE, refused)
    deliveries: list[Delivery] = []
    refused_events = 0
    for event in events:
        if isinstance(event, payload.BadEvent):
            refused_events += 1
            log.warning("hubspot event refused", index=event.index, reason=event.reason)
            continue
        deliveries.append(
            Delivery(
                provider=SOURCE,
                external_id=event.event_id,
                event_type=event.type,
                api_version="webhooks-v3",
                livemode=True,
                payload=stored_json(event.raw),
                plan=plan(event, state.config.hubspot, state.config.mytracker),
            )
        )
    stored = await record(SOURCE, state, deliveries)
    if isinstance(stored, Response):
        return stored
    return JSONResponse(
        {
            "received": len(deliveries),
            "duplicates": sum(1 for r in stored if r.duplicate),
            "refused": refused_events,
        }
    )

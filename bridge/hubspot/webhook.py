"""``POST /webhooks/hubspot``: verify the batch, store each event on its own, answer.

    404  no HUBSPOT_CLIENT_SECRET                                  (not mounted)
    413  body over the limit                                       nothing stored
    400  no signature header, a bad timestamp, a body that is
         not a JSON array of at most 100 events                    nothing stored
    401  no client secret matches (or the URI differs), stale, or
         only a v1/v2 signature while legacy ones are off          nothing stored
    503  the database cannot take the batch                        HubSpot retries
    200  every good event stored (deduplicated on its eventId); an event that is not
         one HubSpot sends is counted in "refused" and skipped: a retry cannot mend it

HubSpot retries a delivery on a 5xx or a timeout (its budget is 5 s) and not on a 4xx,
so 4xx is kept for requests refused for good. The URI HubSpot signed is the one it
called, always rebuilt from BRIDGE_PUBLIC_URL (required with HubSpot on): a URL taken
from the request's ``Host`` or ``X-Forwarded-Host`` is what the client claims, and
would let a signature made for another bridge of the same app (staging, an old URL)
verify here. Only v3 signatures count unless HUBSPOT_ACCEPT_LEGACY_SIGNATURES is on.
An event dated (``occurredAt``) further ahead of our clock than
BRIDGE_SIGNATURE_TOLERANCE is refused: it would order after every real change.

Refusals are noted in the delivery log with their cause (no_header, malformed_header,
timestamp, no_match, url_mismatch: a client secret signed the request for one of the
other URLs the bridge could have rebuilt, which a setting mends; legacy_signature: only
v1/v2), bad events once per batch with their count, and each duplicate event under its
eventId.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bridge.core.ingest import Refusal, read_body
from bridge.core.logs import get_logger
from bridge.core.settings import Settings
from bridge.crm.ingest import parse_json, record, refuse, state_of, stored_json
from bridge.hubspot import payload
from bridge.hubspot.config import HubSpotConfig
from bridge.hubspot.plan import SOURCE, plan
from bridge.hubspot.signature import InvalidSignature, MalformedSignature, UrlMismatch, verify
from bridge.mytracker.config import TrackerConfig
from bridge.store.inbox import Delivery

log = get_logger(__name__)


def _tail(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def _own(request: Request) -> str:
    host = request.headers.get("host", request.url.netloc)
    return f"{request.url.scheme}://{host}{_tail(request)}"


def _forwarded(request: Request) -> str | None:
    proto = request.headers.get("x-forwarded-proto")
    host = request.headers.get("x-forwarded-host")
    if not (proto and host):
        return None
    # A proxy appends what it saw to what the client sent: only the last value is the
    # proxy's own word, every earlier one is the client's.
    return f"{proto.split(',')[-1].strip()}://{host.split(',')[-1].strip()}{_tail(request)}"


def called_uri(request: Request, settings: Settings) -> str:
    """The URL HubSpot called, as it signed it: the configured public URL (settings
    refuse HubSpot without one) and the path and query the request arrived at."""
    if not settings.public_url:  # Settings.hubspot_secrets refuses this at start-up
        raise RuntimeError("HubSpot's endpoint needs BRIDGE_PUBLIC_URL")
    return settings.public_url.rstrip("/") + _tail(request)


def _other_uris(request: Request, settings: Settings) -> list[str]:
    """The URLs HubSpot may have signed if BRIDGE_PUBLIC_URL is wrong, to say so: the
    request's own, the forwarded one (with BRIDGE_TRUST_FORWARDED), each with the other
    scheme. Only ever named in a refusal: a signature for one of them is still refused."""
    called = called_uri(request, settings)
    forwarded = _forwarded(request) if settings.trust_forwarded else None
    found = [uri for uri in (_own(request), forwarded) if uri is not None]
    found += [_other_scheme(uri) for uri in found]
    return [uri for uri in dict.fromkeys(found) if uri != called]


def _other_scheme(uri: str) -> str:
    scheme, sep, rest = uri.partition("://")
    return {"http": "https", "https": "http"}.get(scheme.lower(), scheme) + sep + rest


def _without_query(uri: str) -> str:
    return uri.partition("?")[0]  # a query may carry a token: never in the log


def _verify(request: Request, body: bytes, secrets: Sequence[str]) -> None:
    state = state_of(request)
    settings = state.settings
    called = called_uri(request, settings)
    try:
        verify(
            method=request.method,
            uri=called,
            body=body,
            headers=request.headers,
            secrets=secrets,
            now_ms=int(state.clock() * 1000),
            other_uris=lambda: _other_uris(request, settings),
            legacy=settings.hubspot_accept_legacy_signatures,
        )
    except MalformedSignature as exc:
        raise Refusal(400, "bad_signature_header", str(exc), exc.cause) from None
    except UrlMismatch as exc:
        detail = (
            f"signed for {_without_query(exc.signed_uri)}, not {_without_query(called)}:"
            " set BRIDGE_PUBLIC_URL to the URL in HubSpot's settings"
        )
        raise Refusal(401, "bad_signature", detail, exc.cause) from None
    except InvalidSignature as exc:
        raise Refusal(401, "bad_signature", str(exc), exc.cause) from None


async def endpoint(request: Request, secrets: Sequence[str]) -> Response:
    """One batch; ``secrets``: HubSpot's client secrets, read once when the app was built."""
    state = state_of(request)
    try:
        body = await read_body(request.scope, request.receive, state.settings.max_body_bytes)
        _verify(request, body, secrets)
        try:
            events = payload.read_batch(
                parse_json(body),
                latest_ms=int((state.clock() + state.settings.signature_tolerance) * 1000),
            )
        except payload.BatchError as exc:
            raise Refusal(400, "bad_payload", str(exc)) from None
    except Refusal as refused:
        return refuse(request, SOURCE, refused)
    deliveries: list[Delivery] = []
    bad: list[payload.BadEvent] = []
    for event in events:
        if isinstance(event, payload.BadEvent):
            bad.append(event)
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
                plan=plan(event, HubSpotConfig.of(state.config), TrackerConfig.of(state.config)),
            )
        )
    if bad:
        # Once per batch: the reasons are the bridge's own words, never the event's.
        reasons = "; ".join(f"#{b.index}: {b.reason}" for b in bad)
        detail = f"{len(bad)} of {len(events)} events skipped ({reasons})"
        state.deliveries.refused(SOURCE, "bad_event", request.scope, detail)
    stored = await record(request, SOURCE, deliveries)
    if isinstance(stored, Response):
        return stored
    return JSONResponse(
        {
            "received": len(deliveries),
            "duplicates": sum(1 for r in stored if r.duplicate),
            "refused": len(bad),
        }
    )


PATH = "/webhooks/hubspot"


def routes(settings: Settings) -> Sequence[BaseRoute]:
    """The web half (``bridge.registry``). No client secret, no endpoint (404): unsigned
    data is never taken."""
    secrets = settings.hubspot_secrets()
    if not secrets:
        return []

    async def hubspot_endpoint(request: Request) -> Response:
        return await endpoint(request, secrets)

    return [Route(PATH, hubspot_endpoint, methods=["POST"])]

"""``POST /webhooks/crm/{source}``: the generic signed contract. Verify, record, answer.

    404  no CRM_SECRET_<SOURCE> is set: the source does not exist    nothing stored
    413  body over the limit                                          nothing stored
    400  missing or garbled X-Bridge-Signature, a body that is not
         UTF-8 JSON or not a deal event of the contract (occurred_at
         later than our clock plus BRIDGE_SIGNATURE_TOLERANCE too)    nothing stored
    401  no signature matches, or its time is out of tolerance       nothing stored
    503  the database cannot take the write                           send it again
    200  recorded (or a duplicate of an id already stored)

``X-Bridge-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`` is Stripe's
scheme, so the same code checks it and existing tooling can sign it (the settings refuse
a secret two sources share: the signature does not cover the source), and a refusal is
noted in the delivery log with Stripe's causes (no_header, malformed_header, timestamp,
no_match), under ``crm:<source>`` (``crm`` while the source is unknown).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bridge.core.ingest import Refusal, read_body
from bridge.core.logs import get_logger
from bridge.core.settings import Settings
from bridge.core.signing import InvalidSignature, MalformedHeader, verify
from bridge.crm import contract, deals
from bridge.crm.config import SOURCE_NAME, CrmConfig
from bridge.crm.ingest import parse_json, record, refuse, state_of, stored_json
from bridge.mytracker.config import TrackerConfig
from bridge.store.inbox import Delivery

log = get_logger(__name__)

HEADER = "x-bridge-signature"


async def endpoint(request: Request, sources: Mapping[str, tuple[str, ...]]) -> Response:
    """One delivery to ``/webhooks/crm/{source}``; ``sources``: each source's secrets,
    read once when the app was built."""
    source = str(request.path_params["source"])
    # Counted as "crm" until the source is known: a metric label per made-up name would
    # let anyone grow the metrics without end.
    provider = "crm"
    state = state_of(request)
    try:
        secrets = sources.get(source, ())
        if not secrets:
            # No secret, no source: unsigned data is never taken. Only a well-formed name
            # is echoed: the path is the caller's text.
            named = repr(source) if re.fullmatch(SOURCE_NAME, source) else "by that name"
            raise Refusal(404, "no_such_source", f"no CRM source {named} is configured")
        provider = f"crm:{source}"
        body = await read_body(request.scope, request.receive, state.settings.max_body_bytes)
        try:
            verify(
                body,
                request.headers.get(HEADER),
                secrets,
                tolerance=state.settings.signature_tolerance,
                now=state.clock(),
                header_name="X-Bridge-Signature",
            )
        except MalformedHeader as exc:
            raise Refusal(400, "bad_signature_header", str(exc), exc.cause) from None
        except InvalidSignature as exc:
            raise Refusal(401, "bad_signature", str(exc), exc.cause) from None
        parsed = parse_json(body)
        config = CrmConfig.of(state.config).source(source)
        try:
            latest_ms = int((state.clock() + state.settings.signature_tolerance) * 1000)
            event_id, type_, event = contract.read(parsed, source, config, latest_ms=latest_ms)
        except contract.ContractError as exc:
            raise Refusal(400, "bad_payload", str(exc)) from None
    except Refusal as refused:
        return refuse(request, provider, refused)
    delivery = Delivery(
        provider=provider,
        external_id=event_id,
        event_type=type_,
        api_version="crm-contract-1",
        livemode=True,
        payload=stored_json(parsed),
        plan=deals.plan(event, TrackerConfig.of(state.config)),
    )
    stored = await record(request, provider, [delivery])
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


PATH = "/webhooks/crm/{source}"


def routes(settings: Settings) -> Sequence[BaseRoute]:
    """The web half (``bridge.registry``): always mounted, a source without
    CRM_SECRET_<SOURCE> answers 404 from the endpoint. Its planner names the template and
    carries the buyer (the contract's body has them), so it has no worker half."""
    sources = {
        name: secrets
        for name, secrets in settings.crm_secrets().items()
        if re.fullmatch(SOURCE_NAME, name)
    }
    for name in os.environ:
        source = name.removeprefix("CRM_SECRET_").lower()
        if name.startswith("CRM_SECRET_") and os.environ[name].strip() and source not in sources:
            # A placeholder (or a name no URL can reach) is no secret: the source stays
            # closed, and the operator is told once.
            log.error("CRM source refused: its secret is a placeholder or its name bad", env=name)

    async def crm_endpoint(request: Request) -> Response:
        return await endpoint(request, sources)

    return [Route(PATH, crm_endpoint, methods=["POST"])]

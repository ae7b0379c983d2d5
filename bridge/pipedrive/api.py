"""The Pipedrive API v2 calls the worker makes, with an API token (``x-api-token``;
never in a URL, where proxies would log it).

    GET   /api/v2/deals/{id}            person_id, org_id, value, currency, pipeline_id
    GET   /api/v2/persons/{id}          name, emails [{value, primary, label}]
    GET   /api/v2/organizations/{id}    name
    PATCH /api/v2/deals/{id}            {"custom_fields": {<key_field>: <key>}}

The token's user must see the deals and may edit them. One httpx client per worker.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

import httpx

from bridge.core.providers import Buyer, Deal, WorkerContext
from bridge.core.settings import Settings
from bridge.crm.errors import PermanentCrmError
from bridge.crm.http import call, make_client
from bridge.pipedrive.config import PipedriveConfig


def open_client(settings: Settings) -> httpx.AsyncClient:
    token = settings.pipedrive_api_token.get_secret_value().strip()
    headers = {"x-api-token": token} if token else {}
    return make_client(
        base_url=settings.pipedrive_api_url, headers=headers, timeout=settings.crm_timeout
    )


async def close_client(client: Any) -> None:
    await client.aclose()


def _client(ctx: WorkerContext) -> httpx.AsyncClient:
    client = ctx.provider_client("pipedrive")
    if not ctx.settings.pipedrive_api_token.get_secret_value().strip() or client is None:
        raise PermanentCrmError("PIPEDRIVE_API_TOKEN is not set: the deal cannot be read")
    assert isinstance(client, httpx.AsyncClient)
    return client


def _data(body: dict[str, Any]) -> dict[str, Any]:
    data = body.get("data")
    if not isinstance(data, dict):
        raise PermanentCrmError("Pipedrive answered without a data object")
    return data


def _id(value: Any) -> int | None:
    if isinstance(value, dict):  # some responses expand a reference: {"value": 8, ...}
        value = value.get("value", value.get("id"))
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _email(person: dict[str, Any]) -> str | None:
    emails = person.get("emails", person.get("email"))
    if isinstance(emails, str):
        return emails or None
    entries = [e for e in emails or [] if isinstance(e, dict) and e.get("value")]
    primary = [e for e in entries if e.get("primary")]
    chosen = (primary or entries)[:1]
    return str(chosen[0]["value"]) if chosen else None


async def fetch_deal(ctx: WorkerContext, deal_id: str) -> Deal:
    client = _client(ctx)
    deal = _data(await call(client, "GET", f"/api/v2/deals/{int(deal_id)}"))
    person_id, org_id = _id(deal.get("person_id")), _id(deal.get("org_id"))
    company = None
    if org_id is not None:
        org = _data(await call(client, "GET", f"/api/v2/organizations/{org_id}"))
        company = org.get("name") if isinstance(org.get("name"), str) else None
    buyer = None
    if person_id is not None:
        person = _data(await call(client, "GET", f"/api/v2/persons/{person_id}"))
        name = person.get("name") if isinstance(person.get("name"), str) else None
        buyer = Buyer(email=_email(person), name=name, company=company)
    amount: Decimal | None = None
    try:
        amount = Decimal(str(deal.get("value"))) if deal.get("value") is not None else None
    except InvalidOperation:
        amount = None
    currency = deal.get("currency")
    pipeline = _id(deal.get("pipeline_id"))
    return Deal(
        id=deal_id,
        pipeline=str(pipeline) if pipeline is not None else None,
        amount=amount if amount is not None and amount.is_finite() else None,
        currency=currency if isinstance(currency, str) else None,
        buyer=buyer,
        customer_id=f"pipedrive:person:{person_id}"
        if person_id is not None
        else (f"pipedrive:org:{org_id}" if org_id is not None else None),
    )


async def write_key(ctx: WorkerContext, deal_id: str, key: str) -> dict[str, Any]:
    field = PipedriveConfig.of(ctx.config).key_field
    if field is None:
        return {"field": None}
    await call(
        _client(ctx), "PATCH", f"/api/v2/deals/{int(deal_id)}", json={"custom_fields": {field: key}}
    )
    return {"field": field}

"""The HubSpot CRM v3 calls the worker makes, with a private app's token.

    GET   /crm/v3/objects/deals/{id}?properties=...&associations=contacts,companies
    GET   /crm/v3/objects/contacts/{id}?properties=email,firstname,lastname
    GET   /crm/v3/objects/companies/{id}?properties=name
    PATCH /crm/v3/objects/deals/{id}   {"properties": {<key_property>: <key>}}

Scopes: crm.objects.deals.read, crm.objects.deals.write, crm.objects.contacts.read,
crm.objects.companies.read. One httpx client per worker process (``open``); errors are
``bridge.crm.errors``'s, translated in ``bridge.crm.http``.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

import httpx

from bridge.core.providers import Buyer, Deal, WorkerContext
from bridge.core.settings import Settings
from bridge.crm.errors import PermanentCrmError
from bridge.crm.http import call, make_client
from bridge.hubspot.config import HubSpotConfig

_DEAL_PROPERTIES = "amount,deal_currency_code,pipeline,dealstage"


def open_client(settings: Settings) -> httpx.AsyncClient:
    token = settings.hubspot_token.get_secret_value().strip()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return make_client(
        base_url=settings.hubspot_api_url, headers=headers, timeout=settings.crm_timeout
    )


async def close_client(client: Any) -> None:
    await client.aclose()


def _client(ctx: WorkerContext) -> httpx.AsyncClient:
    client = ctx.provider_client("hubspot")
    if not ctx.settings.hubspot_token.get_secret_value().strip() or client is None:
        raise PermanentCrmError("HUBSPOT_TOKEN is not set: the deal cannot be read")
    assert isinstance(client, httpx.AsyncClient)
    return client


_PLURAL = {"contact": "contacts", "company": "companies"}


def _first(associations: Any, kind: str) -> str | None:
    """The primary association: the one of type ``deal_to_<kind>``, else the first."""
    results = ((associations or {}).get(_PLURAL[kind]) or {}).get("results") or []
    ids = [r for r in results if isinstance(r, dict) and isinstance(r.get("id"), str)]
    primary = [r for r in ids if r.get("type") == f"deal_to_{kind}"]
    chosen = (primary or ids)[:1]
    return str(chosen[0]["id"]) if chosen else None


def _text(obj: dict[str, Any], name: str) -> str | None:
    value = (obj.get("properties") or {}).get(name)
    return value.strip() if isinstance(value, str) and value.strip() else None


async def fetch_deal(ctx: WorkerContext, deal_id: str) -> Deal:
    client = _client(ctx)
    deal = await call(
        client,
        "GET",
        f"/crm/v3/objects/deals/{quote(deal_id, safe='')}"
        f"?properties={_DEAL_PROPERTIES}&associations=contacts,companies",
    )
    buyer: Buyer | None = None
    contact_id = _first(deal.get("associations"), "contact")
    company_id = _first(deal.get("associations"), "company")
    company = None
    if company_id is not None:
        found = await call(
            client, "GET", f"/crm/v3/objects/companies/{quote(company_id, safe='')}?properties=name"
        )
        company = _text(found, "name")
    if contact_id is not None:
        contact = await call(
            client,
            "GET",
            f"/crm/v3/objects/contacts/{quote(contact_id, safe='')}"
            "?properties=email,firstname,lastname",
        )
        name = " ".join(n for n in (_text(contact, "firstname"), _text(contact, "lastname")) if n)
        buyer = Buyer(email=_text(contact, "email"), name=name or None, company=company)
    amount: Decimal | None = None
    raw = _text(deal, "amount")
    if raw is not None:
        try:
            amount = Decimal(raw)
        except InvalidOperation:
            amount = None
    return Deal(
        id=deal_id,
        pipeline=_text(deal, "pipeline"),
        amount=amount if amount is not None and amount.is_finite() else None,
        currency=_text(deal, "deal_currency_code"),
        buyer=buyer,
        customer_id=f"hubspot:contact:{contact_id}"
        if contact_id is not None
        else (f"hubspot:company:{company_id}" if company_id is not None else None),
    )


async def write_key(ctx: WorkerContext, deal_id: str, key: str) -> dict[str, Any]:
    prop = HubSpotConfig.of(ctx.config).key_property
    await call(
        _client(ctx),
        "PATCH",
        f"/crm/v3/objects/deals/{quote(deal_id, safe='')}",
        json={"properties": {prop: key}},
    )
    return {"property": prop}

"""What a CRM webhook only names by id, fetched from the CRM before an effect needs it.

A HubSpot or Pipedrive intent carries ``deal_id``; its provider's ``deal`` hook reads the
deal's current pipeline, amount and primary contact and company through the worker's
one client for that CRM. The facts fill what the planner could not know (the buyer, the
pipeline that names the template, the value of ``deal_won``) and never replace what the
payload itself said. A read is repeated freely: no attempt row.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from bridge import registry
from bridge.core.money import major_to_cryptolens_value
from bridge.core.providers import Deal
from jobs.effects.run import Run


async def enrich(run: Run) -> None:
    """Fill ``run.intent.params`` from the deal, where the intent asks for it."""
    intent = run.intent
    params = intent.params
    deal_id = params.get("deal_id")
    hooks = registry.hooks_for(intent.ref)
    hook = hooks.deal if hooks is not None else None
    if deal_id is None or hook is None:
        return
    deal = await hook(run.rt, str(deal_id))
    merged = dict(params)
    if deal.buyer is not None and not (params.get("customer") or {}).get("email"):
        merged["customer"] = deal.buyer.params()
    merged.setdefault("pipeline", deal.pipeline)
    if (
        "event_name" in params
        and params.get("value") is None
        and deal.amount is not None
        and deal.currency
    ):
        try:
            merged["value"] = major_to_cryptolens_value(deal.amount, deal.currency)
            merged["currency"] = deal.currency.upper()
        except ValueError:  # not an amount or a currency code: the event goes without
            merged["value"] = None
    if "item" in params:
        merged["item"] = _tracked(params["item"], deal)
    run.intent = dataclasses.replace(intent, params=merged)


def _tracked(item: dict[str, Any], deal: Deal) -> dict[str, Any]:
    """A won deal's myTracker event with what the CRM knows: the buyer's CRM id (never
    the email) and the amount, where the payload did not say."""
    item = dict(item)
    if not item.get("customUserId") and deal.customer_id:
        item["customUserId"] = deal.customer_id
    params = dict(item.get("customEventParams") or {})
    if "amount" not in params and deal.amount is not None and deal.currency:
        params["amount"] = str(deal.amount)
        params["currency"] = deal.currency.upper()
    item["customEventParams"] = params
    return item

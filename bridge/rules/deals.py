"""A CRM deal's facts, fetched by the worker (its provider's ``deal`` hook), merged into
an intent's params: what the webhook only named by id. They fill what the planner could
not know (the buyer, the pipeline that names the template, the value of ``deal_won``)
and never replace what the payload itself said."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.core.intents import Effect
from bridge.core.money import major_to_cryptolens_value
from bridge.core.providers import Deal

# Effects that may need what a CRM webhook only names by id.
_ENRICHED = frozenset(
    {Effect.CREATE_KEY, Effect.REGISTER_EVENT, Effect.SET_CUSTOMER, Effect.TRACK_EVENT}
)


def needs_deal(effect: Effect, params: Mapping[str, Any]) -> bool:
    """Whether an intent's params are filled from its CRM deal before it runs."""
    return effect in _ENRICHED and "deal_id" in params


def enriched(params: Mapping[str, Any], deal: Deal) -> dict[str, Any]:
    """``params`` with the deal's facts where they lack them."""
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
    return merged


def _tracked(item: dict[str, Any], deal: Deal) -> dict[str, Any]:
    """A won deal's myTracker event with what the CRM knows: the buyer's CRM id (never
    the email) and the amount, where the payload did not say."""
    item = dict(item)
    if not item.get("customUserId") and deal.customer_id:
        item["customUserId"] = deal.customer_id
    found = dict(item.get("customEventParams") or {})
    if "amount" not in found and deal.amount is not None and deal.currency:
        found["amount"] = str(deal.amount)
        found["currency"] = deal.currency.upper()
    item["customEventParams"] = found
    return item

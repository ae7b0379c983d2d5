"""What a payment or a deal becomes in myTracker: intents the planners add (pure).

Each intent carries one item of myTracker's import as it is sent (``params["item"]``),
with ids only: ``customUserId`` is the Stripe customer id (``cus_...``), the checkout
session id for a guest checkout, or the CRM's contact id; an email, a name or an address
never goes to myTracker. ``total`` is kept as a decimal string (myTracker wants a
number >= 0, in major units: 25.30, not 2530).

    purchase, renewal   customRevenue, idTransaction = the invoice or checkout session id
                        (unique in the project: myTracker keeps one revenue per id)
    refund, deal_won    customEvent with ids and the amount as parameters
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from bridge.core.intents import Effect, IntentSpec

# myTracker's limit on a string (idTransaction, an event's name, a parameter's value).
TEXT_LIMIT = 255


def _text(value: str) -> str:
    if not value or len(value) > TEXT_LIMIT:
        raise ValueError(f"not a myTracker string (1-{TEXT_LIMIT} characters): {value!r}")
    return value


def revenue(
    ref: str,
    *,
    name: str,
    transaction: str,
    user: str | None,
    total: Decimal,
    currency: str,
    occurred_at: int,
) -> list[IntentSpec]:
    """A customRevenue for a payment; none for no money (myTracker counts payments)."""
    if total <= 0:
        return []
    item: dict[str, Any] = {
        "customUserId": user,
        "idTransaction": _text(transaction),
        "total": str(total),
        "currency": currency,
        "eventTimestamp": occurred_at,
    }
    return [
        IntentSpec(
            id=f"{ref}:track:{name}:{transaction}",
            effect=Effect.TRACK_REVENUE,
            license_ref=ref,
            params={"item": item},
            occurred_at=occurred_at,
        )
    ]


def custom_event(
    ref: str,
    *,
    name: str,
    key: str | None,
    user: str | None,
    params: dict[str, str | None],
    occurred_at: int,
    timestamp: int,
) -> IntentSpec:
    """A customEvent; ``params`` hold ids and amounts only (empty values are dropped:
    myTracker wants 1-255 characters). ``occurred_at`` orders the intent as its
    planner's others; ``timestamp`` is the event's time in unix seconds."""
    item: dict[str, Any] = {
        "customUserId": user,
        "customEventName": _text(name),
        "customEventParams": {k: v[:TEXT_LIMIT] for k, v in params.items() if v},
        "eventTimestamp": timestamp,
    }
    suffix = f":{key}" if key else ""
    return IntentSpec(
        id=f"{ref}:track:{name}{suffix}",
        effect=Effect.TRACK_EVENT,
        license_ref=ref,
        params={"item": item},
        occurred_at=occurred_at,
    )

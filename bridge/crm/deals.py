"""Deal events, as every CRM's payload reader gives them, and the intents they imply.

One planner for HubSpot, Pipedrive and the generic contract. A deal is one license,
``<source>:deal:<id>``; intent ids come from the deal and the change, never from the
delivery, so a batch delivered twice, or two events meaning the same change, store one
intent:

    won               create_key (one per deal, won twice or not), register_event
                      ``deal_won`` (one per deal), write_back (one per deal, where the
                      CRM has one), and with lost_policy "block" an unblock dated by
                      the win (it lifts a block that a loss caused, if the win is newer)
    lost / deleted    with lost_policy "block": a block dated by the loss; "none": nothing
    customer_changed  set_customer dated by the change (the newest change wins)

A deal's intents carry ``occurred_at`` in unix *milliseconds* (Stripe's carry seconds):
HubSpot dates its changes to the millisecond, a win and a loss may fall in one second,
and a deal's license is only ever touched by its own CRM's intents, so the comparisons
below stay within one unit. Blocks and unblocks of a deal are ordered by it on the license
(``block_decided_at``); a CRM loss is not one of the payment blocks that end a license
for good (``bridge.core.intents.ENDING_BLOCKS``). A loss of a deal that was never won
waits for a key that may never come, and costs nothing while it waits.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

from bridge.core.intents import TEMPLATE_RANKS, Effect, IntentSpec, Plan
from bridge.core.money import major_to_cryptolens_value
from bridge.core.providers import Buyer
from bridge.crm.config import LostPolicy
from bridge.mytracker import items as tracked
from bridge.mytracker.config import OFF, TrackerConfig

#: ``occurred_at`` of a deal's intents is in unix milliseconds: a CRM provider's
#: ``Provider.occurred_per_second``.
OCCURRED_PER_SECOND = 1000


class Kind(StrEnum):
    WON = "won"
    LOST = "lost"
    DELETED = "deleted"
    CUSTOMER_CHANGED = "customer_changed"


@dataclass(frozen=True)
class DealEvent:
    """One change of one deal. ``fetch``: the worker asks the CRM for what the payload
    only names by id (the contact, the company, the amount, the pipeline)."""

    source: str  # "hubspot", "pipedrive", "crm:<name>"
    deal_id: str
    kind: Kind
    occurred_at_ms: int
    lost_policy: LostPolicy
    template: tuple[int, str] | None = None
    amount: Decimal | None = None
    currency: str | None = None
    buyer: Buyer | None = None
    fetch: bool = False
    write_back: bool = False


def license_ref(source: str, deal_id: str) -> str:
    return f"{source}:deal:{deal_id}"


def plan(event: DealEvent, tracker: TrackerConfig = OFF) -> Plan:
    """The intents a deal change implies; with ``tracker`` on, a won deal is a myTracker
    custom event too."""
    ref = license_ref(event.source, event.deal_id)
    at = stamp = event.occurred_at_ms
    base: dict[str, Any] = {"deal_id": event.deal_id} if event.fetch else {}
    if event.kind is Kind.WON:
        intents = _won(event, ref, at, stamp, base)
        if tracker.enabled:
            intents.append(_tracked_win(event, ref, at, base))
        return Plan(intents=intents)
    if event.kind in (Kind.LOST, Kind.DELETED):
        if event.lost_policy == "none":
            return Plan(ignored=f"deal {event.kind.value}: lost_policy is none")
        reason = f"crm_{event.kind.value}"
        return Plan(
            intents=[
                IntentSpec(
                    id=f"{ref}:block:{reason}:{stamp}",
                    effect=Effect.BLOCK,
                    license_ref=ref,
                    params={"reason": reason},
                    occurred_at=at,
                )
            ]
        )
    customer = {"customer": event.buyer.params()} if event.buyer is not None else {}
    return Plan(
        intents=[
            IntentSpec(
                id=f"{ref}:customer:{stamp}",
                effect=Effect.SET_CUSTOMER,
                license_ref=ref,
                params={**base, **customer},
                occurred_at=at,
            )
        ]
    )


def _tracked_win(event: DealEvent, ref: str, at: int, base: dict[str, Any]) -> IntentSpec:
    """myTracker's ``deal_won``: ids and the amount only. The buyer is the CRM's contact
    id, which the worker fetches (``customer_id``); without one, the deal's ref."""
    spec = tracked.custom_event(
        ref,
        name="deal_won",
        key=None,
        user=None,
        params={
            "source": event.source,
            "deal": event.deal_id,
            "amount": str(event.amount) if event.amount is not None else None,
            "currency": event.currency.upper() if event.currency else None,
        },
        occurred_at=at,
        timestamp=at // 1000,
    )
    return dataclasses.replace(spec, params={**base, **spec.params})


def _won(event: DealEvent, ref: str, at: int, stamp: int, base: dict[str, Any]) -> list[IntentSpec]:
    template_id, source = event.template if event.template is not None else (None, None)
    create = IntentSpec(
        id=f"{ref}:create_key",
        effect=Effect.CREATE_KEY,
        license_ref=ref,
        params={
            **base,
            "template_id": template_id,
            "template_rank": TEMPLATE_RANKS[source] if source else None,
            "template_source": source,
            "customer": event.buyer.params() if event.buyer is not None else None,
            "start": "deal",
        },
        occurred_at=at,
    )
    intents = [create]
    value: int | None = None
    if event.amount is not None and event.currency is not None:
        value = major_to_cryptolens_value(event.amount, event.currency)
    if value != 0 and (value is not None or event.fetch):
        # Without an amount in the payload the worker reads it from the deal.
        intents.append(
            IntentSpec(
                id=f"{ref}:event:deal_won",
                effect=Effect.REGISTER_EVENT,
                license_ref=ref,
                params={
                    **base,
                    "event_name": "deal_won",
                    "value": value,
                    "currency": event.currency.upper() if event.currency else None,
                    "metadata": {"source": event.source, "deal": event.deal_id},
                },
                occurred_at=at,
            )
        )
    if event.write_back:
        intents.append(
            IntentSpec(
                id=f"{ref}:write_back",
                effect=Effect.WRITE_BACK,
                license_ref=ref,
                params={"deal_id": event.deal_id},
                occurred_at=at,
            )
        )
    if event.lost_policy == "block":
        intents.append(
            IntentSpec(
                id=f"{ref}:unblock:crm_won:{stamp}",
                effect=Effect.UNBLOCK,
                license_ref=ref,
                params={"reason": "crm_won"},
                occurred_at=at,
            )
        )
    return intents

"""What a charge's refund and disputes plan: the blocks they set and the block a won
dispute lifts."""

from __future__ import annotations

from bridge.core.blocks import DISPUTE_WON
from bridge.core.intents import Effect, Plan
from bridge.core.money import to_major
from bridge.mytracker import items as tracked
from bridge.mytracker.config import TrackerConfig
from bridge.stripe import plan_specs as specs
from bridge.stripe.config import StripeConfig
from bridge.stripe.payload import Obj, PayloadError


def charge_refunded(ev: specs.Event, config: StripeConfig, tracker: TrackerConfig) -> Plan:
    charge = ev.object.named("charge")
    charge_id = charge.text("id")
    invoice = charge.ref("invoice")
    if invoice is not None:
        return Plan(
            ignored=f"charge {charge_id} paid invoice {invoice}: a subscription's refund is "
            "decided by the subscription's status"
        )
    amount, currency = specs.amount_currency(charge, "amount")
    refunded = charge.number("amount_refunded")
    if refunded < amount:
        return Plan(ignored=f"charge {charge_id} is partly refunded ({refunded} of {amount})")
    payment_intent = charge.ref("payment_intent")
    ref = f"stripe:pi:{payment_intent}" if payment_intent else f"stripe:ch:{charge_id}"
    block = specs.block(
        ref, Effect.BLOCK, reason="refund", suffix=f"refund:{charge_id}", occurred_at=ev.created
    )
    event = specs.register(
        ref,
        name="refund",
        key=charge_id,
        amount=refunded,
        currency=currency,
        ids={"charge": charge_id, "payment_intent": payment_intent},
        occurred_at=ev.created,
    )
    if tracker.enabled:
        # No customer (a guest): the worker names the session that bought the key.
        refund = tracked.custom_event(
            ref,
            name="refund",
            key=charge_id,
            user=charge.ref("customer"),
            params={
                "charge": charge_id,
                "payment_intent": payment_intent,
                "amount": str(to_major(refunded, currency)),
                "currency": currency,
            },
            occurred_at=ev.created,
            timestamp=ev.created,
        )
        event.append(refund)
    return Plan(intents=[block, *event])


def _disputed(dispute: Obj) -> str:
    """The license a dispute is about: its payment's (an alias reaches a subscription)."""
    payment_intent, charge = dispute.ref("payment_intent"), dispute.ref("charge")
    if payment_intent:
        return f"stripe:pi:{payment_intent}"
    if charge:
        return f"stripe:ch:{charge}"
    raise PayloadError(f"{dispute.where}: neither payment_intent nor charge")


def dispute_created(ev: specs.Event, config: StripeConfig, tracker: TrackerConfig) -> Plan:
    dispute = ev.object.named("dispute")
    ref, dispute_id = _disputed(dispute), dispute.text("id")
    block = specs.block(
        ref,
        Effect.BLOCK,
        reason="dispute",
        suffix=f"dispute:{dispute_id}",
        occurred_at=ev.created,
        dispute=dispute_id,
    )
    return Plan(intents=[block])


def dispute_closed(ev: specs.Event, config: StripeConfig, tracker: TrackerConfig) -> Plan:
    """A dispute the vendor won lifts that dispute's block, and only it: the worker
    unblocks the key unless another ending block holds or the subscription is unpaid
    (``bridge.core.blocks``). An inquiry closed without a chargeback (``warning_closed``)
    took no money either, so it lifts too; a lost dispute keeps the key blocked."""
    dispute = ev.object.named("dispute")
    ref, dispute_id = _disputed(dispute), dispute.text("id")
    status = dispute.text("status")
    if status not in ("won", "warning_closed"):
        return Plan(ignored=f"dispute {dispute_id} closed {status}: the key stays blocked")
    lift = specs.block(
        ref,
        Effect.UNBLOCK,
        reason=DISPUTE_WON,
        suffix=f"{DISPUTE_WON}:{dispute_id}",
        occurred_at=ev.created,
        dispute=dispute_id,
    )
    return Plan(intents=[lift])

"""What a paid invoice plans: a subscription's key at its start, the extension to the paid
period's end, the RegisterEvent of the money taken, and aliases from its payment to the
subscription. Both payload shapes (before and after basil) are read."""

from __future__ import annotations

from bridge.core.intents import IntentSpec, Plan
from bridge.core.money import to_major
from bridge.mytracker import items as tracked
from bridge.mytracker.config import TrackerConfig
from bridge.stripe import plan_specs as specs
from bridge.stripe.config import StripeConfig
from bridge.stripe.payload import Obj, PayloadError

_START_REASON = "subscription_create"
_RENEW_REASONS = frozenset({"subscription_cycle", "subscription_update"})


def _invoice_subscription(invoice: Obj) -> tuple[str | None, Obj | None]:
    """The subscription id and the subscription metadata snapshot, in either shape."""
    parent = invoice.opt_obj("parent")  # basil
    details = parent.opt_obj("subscription_details") if parent else None
    if details is not None:
        return details.ref("subscription"), details
    return invoice.ref("subscription"), invoice.opt_obj("subscription_details")


def _line_subscription(line: Obj) -> str | None:
    parent = line.opt_obj("parent")  # basil
    if parent is not None:
        details = parent.opt_obj("subscription_item_details")
        return details.ref("subscription") if details else None
    return line.ref("subscription")


def _line_price(line: Obj) -> specs.Price | None:
    pricing = line.opt_obj("pricing")  # basil: ids only
    details = pricing.opt_obj("price_details") if pricing else None
    if details is not None:
        return specs.Price(
            id=details.ref("price"), product=details.ref("product"), template_id=None
        )
    return specs.read_price(line.expanded("price") or line.expanded("plan"))


def _line_price_object(line: Obj) -> bool:
    """Whether the line carries its price as a whole object (its metadata included)."""
    pricing = line.opt_obj("pricing")
    if pricing is not None and pricing.opt_obj("price_details") is not None:
        return False
    return (line.expanded("price") or line.expanded("plan")) is not None


def _invoice_payments(invoice: Obj) -> tuple[str | None, str | None]:
    """The payment intent and charge that paid the invoice, if the payload names them."""
    payment_intent, charge = invoice.ref("payment_intent"), invoice.ref("charge")
    # basil moved them to invoice.payments (included only when expanded).
    for payment in invoice.items("payments"):
        inner = payment.opt_obj("payment")
        if inner is not None:
            payment_intent = payment_intent or inner.ref("payment_intent")
            charge = charge or inner.ref("charge")
    return payment_intent, charge


def invoice_paid(ev: specs.Event, config: StripeConfig, tracker: TrackerConfig) -> Plan:
    invoice = ev.object.named("invoice")
    invoice_id = invoice.text("id")
    sub_id, sub_details = _invoice_subscription(invoice)
    if sub_id is None:
        return Plan(ignored=f"invoice {invoice_id} is not for a subscription")
    reason = invoice.opt_text("billing_reason")
    if reason != _START_REASON and reason not in _RENEW_REASONS:
        return Plan(ignored=f"invoice {invoice_id} billing_reason {reason} implies no change")
    ref = f"stripe:sub:{sub_id}"
    transitions = invoice.opt_obj("status_transitions")
    # From the invoice, not the event: invoice.paid and invoice.payment_succeeded must
    # plan identical intents.
    occurred_at = (transitions.opt_number("paid_at") if transitions else None) or invoice.number(
        "created"
    )

    lines = [line for line in invoice.items("lines") if _line_subscription(line) == sub_id]
    periods = [(line.obj("period").number("end"), line) for line in lines]
    period_end, line = max(periods, key=lambda p: p[0]) if periods else (None, None)
    price = _line_price(line) if line is not None else None
    if period_end is None and reason != _START_REASON:
        raise PayloadError(f"{invoice.where}: no line of subscription {sub_id} with a period")
    expires_at = (
        period_end + config.grace_for(price.id if price else None) * specs.DAY
        if period_end is not None
        else None
    )

    intents: list[IntentSpec] = []
    if reason == _START_REASON:
        customer = specs.buyer(
            invoice.opt_text("customer_email"),
            invoice.opt_text("customer_name"),
            invoice.ref("customer"),
        )
        # What the invoice carries in full: the subscription's metadata (a snapshot in
        # subscription_details), and its line's price as a whole object (not in basil,
        # whose lines name the price by id).
        carried = ["purchase"] if sub_details is not None and "metadata" in sub_details.data else []
        carried += ["price"] if line is not None and _line_price_object(line) else []
        intents.append(
            specs.create_key(
                ref,
                config=config,
                occurred_at=occurred_at,
                owner_template=specs.template_hint(sub_details),
                price=price,
                checkout_session=None,
                customer=customer,
                expires_at=expires_at,
                start="subscription",
                hints_from=carried,
            )
        )
        intents += specs.link_customer(ref, customer, occurred_at=occurred_at)
    if period_end is not None and expires_at is not None:
        intents.append(
            specs.extend(
                ref,
                expires_at=expires_at,
                period_end=period_end,
                invoice=invoice_id,
                occurred_at=occurred_at,
            )
        )
    payment_intent, charge = _invoice_payments(invoice)
    amount, currency = specs.amount_currency(invoice, "amount_paid")
    intents += specs.register(
        ref,
        name="purchase" if reason == _START_REASON else "renewal",
        key=invoice_id,
        amount=amount,
        currency=currency,
        ids={
            "invoice": invoice_id,
            "subscription": sub_id,
            "payment_intent": payment_intent,
            "charge": charge,
        },
        occurred_at=occurred_at,
    )
    if tracker.enabled:
        intents += tracked.revenue(
            ref,
            name="purchase" if reason == _START_REASON else "renewal",
            transaction=invoice_id,
            user=invoice.ref("customer"),
            total=to_major(amount, currency),
            currency=currency,
            occurred_at=occurred_at,
        )
    aliases = [(f"stripe:pi:{payment_intent}", ref)] if payment_intent else []
    aliases += [(f"stripe:ch:{charge}", ref)] if charge else []
    return Plan(intents=intents, aliases=aliases)

"""What a completed Checkout Session plans: a one-off purchase's key and its RegisterEvent,
or a subscription's key (its first invoice registers the money)."""

from __future__ import annotations

from bridge.core.intents import Plan
from bridge.core.money import to_major
from bridge.mytracker import items as tracked
from bridge.mytracker.config import TrackerConfig
from bridge.stripe import plan_specs as specs
from bridge.stripe.config import StripeConfig
from bridge.stripe.payload import PayloadError
from bridge.stripe.plan_subscription import subscription_price


def checkout(ev: specs.Event, config: StripeConfig, tracker: TrackerConfig) -> Plan:
    session = ev.object.named("checkout session")
    session_id = session.text("id")
    mode = session.text("mode")
    if mode not in ("payment", "subscription"):
        return Plan(ignored=f"checkout session {session_id} is in {mode} mode: nothing bought")
    status = session.text("payment_status")
    if status == "unpaid":
        return Plan(
            ignored=f"checkout session {session_id} is unpaid (an async payment is pending; "
            "checkout.session.async_payment_succeeded follows when it clears)"
        )
    if status not in ("paid", "no_payment_required"):
        raise PayloadError(f"{session.where}: unknown payment_status {status!r}")

    details = session.opt_obj("customer_details")
    expanded_customer = session.expanded("customer")
    customer = specs.buyer(
        (details.opt_text("email") if details else None)
        or session.opt_text("customer_email")
        or (expanded_customer.opt_text("email") if expanded_customer else None),
        (details.opt_text("name") if details else None)
        or (expanded_customer.opt_text("name") if expanded_customer else None),
        session.ref("customer"),
    )
    # Webhooks never expand line_items, but a payload that carries them (the send CLI,
    # a replay of a retrieved session) saves the worker a round trip.
    lines = session.items("line_items")
    price = specs.read_price(lines[0].opt_obj("price")) if lines else None

    if mode == "subscription":
        sub_id = session.ref("subscription")
        if sub_id is None:
            raise PayloadError(f"{session.where}: subscription is missing")
        subscription = session.expanded("subscription")
        ref = f"stripe:sub:{sub_id}"
        on_session = specs.template_hint(session)
        create = specs.create_key(
            ref,
            config=config,
            occurred_at=ev.created,
            owner_template=on_session or specs.template_hint(subscription),
            owner_source="session" if on_session else "purchase",
            # The session's metadata; the subscription's only when a replay expanded it.
            hints_from=["session", "purchase"] if subscription else ["session"],
            price=price or (subscription_price(subscription, config) if subscription else None),
            checkout_session=session_id,
            customer=customer,
            # The session does not know the period; the invoice or subscription event
            # that carries it plans the extension.
            expires_at=None,
            start="subscription",
        )
        # No RegisterEvent: the first invoice's invoice.paid registers the purchase.
        return Plan(intents=[create, *specs.link_customer(ref, customer, occurred_at=ev.created)])

    payment_intent = session.ref("payment_intent")
    ref = f"stripe:pi:{payment_intent}" if payment_intent else f"stripe:cs:{session_id}"
    amount, currency = specs.amount_currency(session, "amount_total")
    create = specs.create_key(
        ref,
        config=config,
        occurred_at=ev.created,
        owner_template=specs.template_hint(session),
        price=price,
        checkout_session=session_id,
        customer=customer,
        expires_at=None,
        start="payment",
    )
    event = specs.register(
        ref,
        name="purchase",
        key=session_id,
        amount=amount,
        currency=currency,
        ids={"session": session_id, "payment_intent": payment_intent},
        occurred_at=ev.created,
    )
    if tracker.enabled:
        # A guest checkout has no Stripe customer: the session stands for the buyer.
        event += tracked.revenue(
            ref,
            name="purchase",
            transaction=session_id,
            user=session.ref("customer") or session_id,
            total=to_major(amount, currency),
            currency=currency,
            occurred_at=ev.created,
        )
    return Plan(intents=[create, *event])

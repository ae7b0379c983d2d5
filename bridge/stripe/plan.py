"""A verified Stripe event -> the Cryptolens intents it implies (a pure function).

Licenses: a subscription's is ``stripe:sub:<sub>``; a one-off purchase's is
``stripe:pi:<payment_intent>`` (``stripe:cs:<session>`` when nothing was paid, so no
payment intent exists). A dispute or refund that only names a charge uses
``stripe:ch:<charge>``; invoices publish aliases from their payment intent and charge
to the subscription, so the worker finds the key.

Intent ids come from business objects, never from the delivery: the same change seen
through different events (invoice.paid and invoice.payment_succeeded; the three ways a
subscription starts) gets the same id, and the store keeps the first. Extensions are
absolute targets (``<ref>:expires:<unix>``), so equal targets collapse into one.

Choices (see the tests for each):

* The subscription's first payment is registered from ``invoice.paid``
  (billing_reason ``subscription_create``), never from the checkout session: every
  subscription has that invoice however it was created (Checkout, API, Dashboard), its
  id dedupes with ``invoice.payment_succeeded``, and its ``amount_paid`` is the money
  actually taken. Registering the session too would count the same money twice.
* No money, no RegisterEvent: a 0 amount (a trial start, a 100% coupon) still creates
  and extends keys but registers nothing, so Cryptolens' revenue and conversion
  figures only count payments.
* ``payment_status == "no_payment_required"`` (a trial or a free checkout) fulfils like
  ``paid``, as Stripe's fulfilment guide says: anything but ``unpaid``.

Both payload shapes are read: API 2024-06-20 (``invoice.subscription``, ``line.price``,
``subscription.current_period_end``) and 2025-03-31.basil onwards
(``invoice.parent.subscription_details``, ``line.parent.subscription_item_details``,
``line.pricing.price_details``, ``items.data[].current_period_end``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bridge.core.blocks import DISPUTE_WON
from bridge.core.intents import HINTS_FROM, TEMPLATE_RANKS, Effect, IntentSpec, Plan
from bridge.core.money import currency_code, to_cryptolens_value, to_major
from bridge.mytracker import items as tracked
from bridge.mytracker.config import OFF, TrackerConfig
from bridge.stripe.config import StripeConfig
from bridge.stripe.handover import with_handover
from bridge.stripe.payload import Obj, PayloadError

__all__ = ["HANDLED_TYPES", "TEMPLATE_KEY", "PayloadError", "plan"]

#: Metadata key naming the Cryptolens template, on a session, subscription, price or product.
TEMPLATE_KEY = "cryptolens_template_id"
_DAY = 86400
_POSITIVE_INT = re.compile(r"[1-9][0-9]{0,9}")

_START_REASON = "subscription_create"
_RENEW_REASONS = frozenset({"subscription_cycle", "subscription_update"})
_LIVE_STATUSES = frozenset({"active", "trialing"})


def _template(owner: Obj | None) -> int | None:
    metadata = owner.opt_obj("metadata") if owner is not None else None
    if metadata is None:
        return None
    raw = metadata.data.get(TEMPLATE_KEY)
    if raw is None or raw == "":
        return None
    if not _POSITIVE_INT.fullmatch(str(raw).strip()):
        raise PayloadError(f"{metadata.where}: {TEMPLATE_KEY}={raw!r} is not a positive integer")
    return int(str(raw).strip())


def _amount_currency(o: Obj, key: str) -> tuple[int, str]:
    amount = o.number(key)
    try:
        return amount, currency_code(o.text("currency"))
    except ValueError as exc:
        raise PayloadError(f"{o.where}: {exc}") from None


# ---------------------------------------------------------------------------------------
# Building intents.


@dataclass(frozen=True)
class _Price:
    id: str | None
    product: str | None
    template_id: int | None  # from the price's metadata, else the expanded product's
    template_source: str | None = None  # "price" or "product": where template_id came from


def _price(price: Obj | None, product: Obj | None = None) -> _Price | None:
    if price is None:
        return None
    product = product or price.expanded("product")
    on_price, on_product = _template(price), _template(product)
    return _Price(
        id=price.opt_text("id"),
        product=price.ref("product"),
        template_id=on_price or on_product,
        template_source="price" if on_price else "product" if on_product else None,
    )


@dataclass(frozen=True)
class _Event:
    type: str
    created: int
    object: Obj
    previous: Obj | None


def _create_key(
    ref: str,
    *,
    config: StripeConfig,
    occurred_at: int,
    owner_template: int | None,
    price: _Price | None,
    checkout_session: str | None,
    customer: dict[str, str | None],
    expires_at: int | None,
    start: str,
    owner_source: str = "purchase",
    hints_from: list[str] | None = None,
) -> IntentSpec:
    price_id = price.id if price else None
    mapping = config.mapping_for(price_id)
    # The most specific hint wins: the purchase itself (a subscription's checkout session
    # over the subscription), then the price, then the product, then the TOML mapping.
    # None leaves it to the worker (line items, then the default). The source's rank lets
    # a later delivery of the same start replace a vaguer hint
    # (bridge.core.intents.merge_start).
    template_id: int | None = None
    source: str | None = None
    if owner_template is not None:
        template_id, source = owner_template, owner_source
    elif price is not None and price.template_id is not None:
        template_id, source = price.template_id, price.template_source
    elif mapping is not None:
        template_id, source = mapping.template_id, "mapping"
    return IntentSpec(
        id=f"{ref}:create_key",
        effect=Effect.CREATE_KEY,
        license_ref=ref,
        params={
            "template_id": template_id,
            "template_rank": TEMPLATE_RANKS[source] if source else None,
            "template_source": source,
            "price_id": price_id,
            "product_id_stripe": price.product if price else None,
            "checkout_session": checkout_session,
            "customer": customer,
            "expires_at": expires_at,
            # A subscription has three start events in no fixed order: its key creation
            # waits for the others while one of them may still name a richer template
            # (bridge.stripe.templates.final_template).
            "start": start,
            **({HINTS_FROM: sorted(hints_from)} if hints_from is not None else {}),
        },
        occurred_at=occurred_at,
    )


def _link_customer(
    ref: str, customer: dict[str, str | None], *, occurred_at: int
) -> list[IntentSpec]:
    """The buyer's link, for a subscription start that names the buyer's email.

    Its own intent, not part of the key's creation: whichever start event names the buyer
    (the session and the first invoice do; ``customer.subscription.created`` only names a
    Stripe customer id), the key is linked once the key and the buyer are both known.
    """
    if not customer.get("email"):
        return []
    return [
        IntentSpec(
            id=f"{ref}:link_customer",
            effect=Effect.LINK_CUSTOMER,
            license_ref=ref,
            params={"customer": customer},
            occurred_at=occurred_at,
        )
    ]


def _extend(
    ref: str, *, expires_at: int, period_end: int, invoice: str | None, occurred_at: int
) -> IntentSpec:
    return IntentSpec(
        id=f"{ref}:expires:{expires_at}",
        effect=Effect.EXTEND,
        license_ref=ref,
        params={"expires_at": expires_at, "invoice": invoice, "period_end": period_end},
        occurred_at=occurred_at,
    )


def _block(
    ref: str,
    effect: Effect,
    *,
    reason: str,
    suffix: str,
    occurred_at: int,
    dispute: str | None = None,
) -> IntentSpec:
    params = {"reason": reason}
    if dispute is not None:
        # The dispute named, so that its close lifts its own block and no other.
        params["dispute"] = dispute
    return IntentSpec(
        id=f"{ref}:{effect.value}:{suffix}",
        effect=effect,
        license_ref=ref,
        params=params,
        occurred_at=occurred_at,
    )


def _register(
    ref: str,
    *,
    name: str,
    key: str,
    amount: int,
    currency: str,
    ids: Mapping[str, str | None],
    occurred_at: int,
) -> list[IntentSpec]:
    """A RegisterEvent carrying only Stripe ids (no personal data); none for no money."""
    if amount == 0:
        return []
    intent_id = f"{ref}:event:{name}:{key}"
    metadata: dict[str, str] = {k: v for k, v in ids.items() if v is not None}
    metadata["intent"] = intent_id
    return [
        IntentSpec(
            id=intent_id,
            effect=Effect.REGISTER_EVENT,
            license_ref=ref,
            params={
                "event_name": name,
                "value": to_cryptolens_value(amount, currency),
                "currency": currency,
                "metadata": metadata,
            },
            occurred_at=occurred_at,
        )
    ]


def _customer(
    email: str | None, name: str | None, stripe_customer: str | None
) -> dict[str, str | None]:
    return {"email": email, "name": name, "stripe_customer": stripe_customer}


# ---------------------------------------------------------------------------------------
# Checkout.


def _checkout(ev: _Event, config: StripeConfig, tracker: TrackerConfig) -> Plan:
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
    customer = _customer(
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
    price = _price(lines[0].opt_obj("price")) if lines else None

    if mode == "subscription":
        sub_id = session.ref("subscription")
        if sub_id is None:
            raise PayloadError(f"{session.where}: subscription is missing")
        subscription = session.expanded("subscription")
        ref = f"stripe:sub:{sub_id}"
        on_session = _template(session)
        create = _create_key(
            ref,
            config=config,
            occurred_at=ev.created,
            owner_template=on_session or _template(subscription),
            owner_source="session" if on_session else "purchase",
            # The session's metadata; the subscription's only when a replay expanded it.
            hints_from=["session", "purchase"] if subscription else ["session"],
            price=price or (_subscription_price(subscription, config) if subscription else None),
            checkout_session=session_id,
            customer=customer,
            # The session does not know the period; the invoice or subscription event
            # that carries it plans the extension.
            expires_at=None,
            start="subscription",
        )
        # No RegisterEvent: the first invoice's invoice.paid registers the purchase.
        return Plan(intents=[create, *_link_customer(ref, customer, occurred_at=ev.created)])

    payment_intent = session.ref("payment_intent")
    ref = f"stripe:pi:{payment_intent}" if payment_intent else f"stripe:cs:{session_id}"
    amount, currency = _amount_currency(session, "amount_total")
    create = _create_key(
        ref,
        config=config,
        occurred_at=ev.created,
        owner_template=_template(session),
        price=price,
        checkout_session=session_id,
        customer=customer,
        expires_at=None,
        start="payment",
    )
    event = _register(
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


# ---------------------------------------------------------------------------------------
# Subscriptions.


def _subscription_price(sub: Obj, config: StripeConfig) -> _Price | None:
    """The item that names the license: the first one we have a template hint for."""
    prices = [_price(item.opt_obj("price")) for item in sub.items("items")]
    known = [p for p in prices if p is not None]
    for p in known:
        if p.template_id is not None or config.mapping_for(p.id) is not None:
            return p
    return known[0] if known else None


def _subscription_period_end(sub: Obj) -> int | None:
    top = sub.opt_number("current_period_end")  # API <= 2025-02-24.acacia
    if top is not None:
        return top
    # basil: each item has its own period; the key lives as long as the longest one.
    ends = [e for item in sub.items("items") if (e := item.opt_number("current_period_end"))]
    return max(ends) if ends else None


def _subscription_start(sub: Obj, ev: _Event, config: StripeConfig) -> list[IntentSpec]:
    ref = f"stripe:sub:{sub.text('id')}"
    price = _subscription_price(sub, config)
    period_end = _subscription_period_end(sub)
    grace = config.grace_for(price.id if price else None)
    expires_at = period_end + grace * _DAY if period_end is not None else None
    expanded = sub.expanded("customer")
    customer = _customer(
        expanded.opt_text("email") if expanded else None,
        expanded.opt_text("name") if expanded else None,
        sub.ref("customer"),
    )
    intents = [
        _create_key(
            ref,
            config=config,
            occurred_at=ev.created,
            owner_template=_template(sub),
            price=price,
            checkout_session=None,
            customer=customer,
            expires_at=expires_at,
            start="subscription",
            # Its metadata, and its items' prices as whole objects (with their metadata).
            hints_from=["purchase", "price"],
        ),
        *_link_customer(ref, customer, occurred_at=ev.created),
    ]
    if period_end is not None and expires_at is not None:
        intents.append(
            _extend(
                ref,
                expires_at=expires_at,
                period_end=period_end,
                invoice=None,
                occurred_at=ev.created,
            )
        )
    return intents


def _subscription_created(ev: _Event, config: StripeConfig, tracker: TrackerConfig) -> Plan:
    sub = ev.object.named("subscription")
    status = sub.text("status")
    if status not in _LIVE_STATUSES:
        return Plan(
            ignored=f"subscription {sub.text('id')} is {status}: its key is made once it is paid"
        )
    return Plan(intents=_subscription_start(sub, ev, config))


def _blocking(config: StripeConfig) -> frozenset[str]:
    return frozenset({"unpaid", "past_due"} if config.unpaid_policy == "past_due" else {"unpaid"})


def _subscription_updated(ev: _Event, config: StripeConfig, tracker: TrackerConfig) -> Plan:
    sub = ev.object.named("subscription")
    sub_id = sub.text("id")
    ref = f"stripe:sub:{sub_id}"
    status = sub.text("status")
    previous = ev.previous.data if ev.previous is not None else {}
    old = previous.get("status")
    blocking = _blocking(config)

    if old is None or old == status:
        if "cancel_at_period_end" in previous or "cancel_at" in previous:
            return Plan(
                ignored=f"subscription {sub_id} cancellation schedule changed; the key stays "
                "valid until customer.subscription.deleted"
            )
        if "current_period_end" in previous or "items" in previous:
            return Plan(
                ignored=f"subscription {sub_id} billing period changed; "
                "the paid invoice extends the key"
            )
        return Plan(ignored=f"subscription {sub_id} changed without a status change")
    if not isinstance(old, str):
        raise PayloadError(f"{sub.where}: previous_attributes.status has the wrong type")

    if status == "canceled":
        # customer.subscription.deleted plans the same id; whichever comes first counts.
        block = _block(
            ref, Effect.BLOCK, reason="canceled", suffix="canceled", occurred_at=ev.created
        )
        return Plan(intents=[block])
    if status in blocking and old not in blocking:
        block = _block(
            ref,
            Effect.BLOCK,
            reason=status,
            suffix=f"{status}:{ev.created}",
            occurred_at=ev.created,
        )
        return Plan(intents=[block])
    if status in _LIVE_STATUSES and old in blocking:
        unblock = _block(
            ref, Effect.UNBLOCK, reason="active", suffix=str(ev.created), occurred_at=ev.created
        )
        return Plan(intents=[unblock])
    if status in _LIVE_STATUSES and old == "incomplete":
        # The first payment went through: one more way for the key to be made.
        return Plan(intents=_subscription_start(sub, ev, config))
    return Plan(
        ignored=f"subscription {sub_id} went {old} -> {status}: nothing to do under "
        f"unpaid_policy {config.unpaid_policy!r}"
    )


def _subscription_deleted(ev: _Event, config: StripeConfig, tracker: TrackerConfig) -> Plan:
    sub = ev.object.named("subscription")
    ref = f"stripe:sub:{sub.text('id')}"
    return Plan(
        intents=[
            _block(ref, Effect.BLOCK, reason="canceled", suffix="canceled", occurred_at=ev.created)
        ]
    )


# ---------------------------------------------------------------------------------------
# Invoices.


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


def _line_price(line: Obj) -> _Price | None:
    pricing = line.opt_obj("pricing")  # basil: ids only
    details = pricing.opt_obj("price_details") if pricing else None
    if details is not None:
        return _Price(id=details.ref("price"), product=details.ref("product"), template_id=None)
    return _price(line.expanded("price") or line.expanded("plan"))


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


def _invoice_paid(ev: _Event, config: StripeConfig, tracker: TrackerConfig) -> Plan:
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
        period_end + config.grace_for(price.id if price else None) * _DAY
        if period_end is not None
        else None
    )

    intents: list[IntentSpec] = []
    if reason == _START_REASON:
        customer = _customer(
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
            _create_key(
                ref,
                config=config,
                occurred_at=occurred_at,
                owner_template=_template(sub_details),
                price=price,
                checkout_session=None,
                customer=customer,
                expires_at=expires_at,
                start="subscription",
                hints_from=carried,
            )
        )
        intents += _link_customer(ref, customer, occurred_at=occurred_at)
    if period_end is not None and expires_at is not None:
        intents.append(
            _extend(
                ref,
                expires_at=expires_at,
                period_end=period_end,
                invoice=invoice_id,
                occurred_at=occurred_at,
            )
        )
    payment_intent, charge = _invoice_payments(invoice)
    amount, currency = _amount_currency(invoice, "amount_paid")
    intents += _register(
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


# ---------------------------------------------------------------------------------------
# Refunds and disputes.


def _charge_refunded(ev: _Event, config: StripeConfig, tracker: TrackerConfig) -> Plan:
    charge = ev.object.named("charge")
    charge_id = charge.text("id")
    invoice = charge.ref("invoice")
    if invoice is not None:
        return Plan(
            ignored=f"charge {charge_id} paid invoice {invoice}: a subscription's refund is "
            "decided by the subscription's status"
        )
    amount, currency = _amount_currency(charge, "amount")
    refunded = charge.number("amount_refunded")
    if refunded < amount:
        return Plan(ignored=f"charge {charge_id} is partly refunded ({refunded} of {amount})")
    payment_intent = charge.ref("payment_intent")
    ref = f"stripe:pi:{payment_intent}" if payment_intent else f"stripe:ch:{charge_id}"
    block = _block(
        ref, Effect.BLOCK, reason="refund", suffix=f"refund:{charge_id}", occurred_at=ev.created
    )
    event = _register(
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


def _dispute_created(ev: _Event, config: StripeConfig, tracker: TrackerConfig) -> Plan:
    dispute = ev.object.named("dispute")
    ref, dispute_id = _disputed(dispute), dispute.text("id")
    block = _block(
        ref,
        Effect.BLOCK,
        reason="dispute",
        suffix=f"dispute:{dispute_id}",
        occurred_at=ev.created,
        dispute=dispute_id,
    )
    return Plan(intents=[block])


def _dispute_closed(ev: _Event, config: StripeConfig, tracker: TrackerConfig) -> Plan:
    """A dispute the vendor won lifts that dispute's block, and only it: the worker
    unblocks the key unless another ending block holds or the subscription is unpaid
    (``bridge.core.blocks``). An inquiry closed without a chargeback (``warning_closed``)
    took no money either, so it lifts too; a lost dispute keeps the key blocked."""
    dispute = ev.object.named("dispute")
    ref, dispute_id = _disputed(dispute), dispute.text("id")
    status = dispute.text("status")
    if status not in ("won", "warning_closed"):
        return Plan(ignored=f"dispute {dispute_id} closed {status}: the key stays blocked")
    lift = _block(
        ref,
        Effect.UNBLOCK,
        reason=DISPUTE_WON,
        suffix=f"{DISPUTE_WON}:{dispute_id}",
        occurred_at=ev.created,
        dispute=dispute_id,
    )
    return Plan(intents=[lift])


_HANDLERS: dict[str, Callable[[_Event, StripeConfig, TrackerConfig], Plan]] = {
    "checkout.session.completed": _checkout,
    "checkout.session.async_payment_succeeded": _checkout,
    "customer.subscription.created": _subscription_created,
    "customer.subscription.updated": _subscription_updated,
    "customer.subscription.deleted": _subscription_deleted,
    "invoice.paid": _invoice_paid,
    "invoice.payment_succeeded": _invoice_paid,
    "charge.refunded": _charge_refunded,
    "charge.dispute.created": _dispute_created,
    "charge.dispute.closed": _dispute_closed,
}

#: The event types :func:`plan` reads; subscribe the webhook endpoint to these.
HANDLED_TYPES: frozenset[str] = frozenset(_HANDLERS)


def plan(event: Mapping[str, Any], config: StripeConfig, tracker: TrackerConfig = OFF) -> Plan:
    """The intents a verified Stripe event (parsed JSON) implies; with ``tracker`` on,
    myTracker's items beside the RegisterEvent ones (``bridge.mytracker.items``).

    Unhandled types and handled types that imply nothing return ``Plan(ignored=...)``;
    an event missing a field its type needs raises :class:`PayloadError`.
    """
    envelope = Obj.of(event, "event")
    event_type = envelope.text("type")
    handler = _HANDLERS.get(event_type)
    if handler is None:
        return Plan(ignored=f"unhandled type {event_type}")
    data = envelope.obj("data")
    parsed = _Event(
        type=event_type,
        created=envelope.number("created"),
        object=Obj.of(data.data.get("object"), f"{event_type} data.object"),
        previous=data.opt_obj("previous_attributes"),
    )
    return with_handover(handler(parsed, config, tracker), config)

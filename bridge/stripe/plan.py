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

Each Stripe object's plan has its module: :mod:`bridge.stripe.plan_checkout`,
:mod:`bridge.stripe.plan_subscription`, :mod:`bridge.stripe.plan_invoice` and
:mod:`bridge.stripe.plan_charge` (refunds and disputes), built of the parts in
:mod:`bridge.stripe.plan_specs`; this module dispatches an event to its handler.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from bridge.core.intents import Plan
from bridge.mytracker.config import OFF, TrackerConfig
from bridge.stripe.config import StripeConfig
from bridge.stripe.handover import with_handover
from bridge.stripe.payload import Obj, PayloadError
from bridge.stripe.plan_charge import charge_refunded, dispute_closed, dispute_created
from bridge.stripe.plan_checkout import checkout
from bridge.stripe.plan_invoice import invoice_paid
from bridge.stripe.plan_specs import Event
from bridge.stripe.plan_subscription import (
    subscription_created,
    subscription_deleted,
    subscription_updated,
)

__all__ = ["HANDLED_TYPES", "PayloadError", "plan"]


_HANDLERS: dict[str, Callable[[Event, StripeConfig, TrackerConfig], Plan]] = {
    "checkout.session.completed": checkout,
    "checkout.session.async_payment_succeeded": checkout,
    "customer.subscription.created": subscription_created,
    "customer.subscription.updated": subscription_updated,
    "customer.subscription.deleted": subscription_deleted,
    "invoice.paid": invoice_paid,
    "invoice.payment_succeeded": invoice_paid,
    "charge.refunded": charge_refunded,
    "charge.dispute.created": dispute_created,
    "charge.dispute.closed": dispute_closed,
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
    parsed = Event(
        type=event_type,
        created=envelope.number("created"),
        object=Obj.of(data.data.get("object"), f"{event_type} data.object"),
        previous=data.opt_obj("previous_attributes"),
    )
    return with_handover(handler(parsed, config, tracker), config)

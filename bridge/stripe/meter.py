"""Stripe's side of the ``stripe_meter`` usage sink: who a key's meter events are for,
and the Billing Meter event itself (the worker's ``meter_customer`` and ``send_meter``
hooks; the attempts and the dedupe window are ``jobs.effects.meter``'s).

The customer is the one of the key's Stripe subscription (license ref
``stripe:sub:<id>``), asked of the Stripe API once per worker process: a subscription
does not change customer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import stripe

from bridge.core.providers import MeterEvent, WorkerContext
from bridge.stripe import api

SUB_PREFIX = "stripe:sub:"


@dataclass
class StripeClients:
    """What a worker process keeps for Stripe (its ``provider_client("stripe")``)."""

    http: stripe.HTTPXClient
    # Subscription id -> its customer; never changes.
    customers: dict[str, str] = field(default_factory=dict)


def http_client(ctx: WorkerContext) -> stripe.HTTPXClient | None:
    """The worker's shared Stripe transport (None in a context without clients)."""
    clients = ctx.provider_client("stripe")
    return clients.http if isinstance(clients, StripeClients) else None


def _options(ctx: WorkerContext) -> dict[str, Any]:
    settings = ctx.settings
    if settings.stripe_api_key is None or not settings.stripe_api_key.get_secret_value():
        raise api.PermanentStripeError(
            "configuration: STRIPE_API_KEY is not set (stripe_meter sink)"
        )
    return {
        "api_key": settings.stripe_api_key.get_secret_value(),
        "api_base": settings.stripe_api_base,
        "http_client": http_client(ctx),
    }


async def meter_customer(ctx: WorkerContext, license_ref: str) -> str | None:
    """The customer of subscription license ``stripe:sub:<id>``; None for another ref."""
    if not license_ref.startswith(SUB_PREFIX):
        return None
    subscription = license_ref.removeprefix(SUB_PREFIX)
    clients = ctx.provider_client("stripe")
    known = clients.customers if isinstance(clients, StripeClients) else {}
    customer = known.get(subscription)
    if customer is None:
        customer = await api.subscription_customer(subscription, **_options(ctx))
        known[subscription] = customer
    return customer


async def send_meter(ctx: WorkerContext, event: MeterEvent) -> bool:
    """POST the meter event; True when Stripe already had one with its identifier (the
    earlier send landed). Transient errors are :class:`~bridge.core.errors.Retryable`."""
    try:
        await api.create_meter_event(event, **_options(ctx))
    except api.DuplicateMeterEvent:
        return True
    return False

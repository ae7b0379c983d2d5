"""The ``stripe_meter`` usage sink: one Stripe Billing Meter event per aggregate.

The event's ``identifier`` is the aggregate's (the intent's) id, which names the key by
its digest only (:func:`bridge.core.intents.public_id`), and Stripe keeps an
identifier unique for at least 24 hours (a duplicate it answers as such counts as sent). So
unlike RecordUsage, a send whose outcome is unknown is simply sent again, as long as
the first send is less than ``DEDUPE_WINDOW`` old; past it, a re-send could count
twice, and the aggregate goes to a person instead.

The customer is the one of the key's Stripe subscription: the license ref
``stripe:sub:<id>`` the bridge keeps for the key, asked of the Stripe API once per
process (a subscription does not change customer).
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

from bridge.core.errors import Permanent
from bridge.core.intents import public_id
from bridge.cryptolens import OutcomeUnknown
from bridge.store import attempts, ledger, licenses
from bridge.stripe import api as stripe_api
from jobs.dbcall import in_thread
from jobs.effects.run import Run
from jobs.errors import NeedsReview

METHOD = "stripe/billing/meter_events"
# Stripe: "We will enforce uniqueness within a rolling period of at least 24 hours".
# Re-sends stop an hour short of it: a margin for clocks and a slow call.
DEDUPE_WINDOW = timedelta(hours=23)
_IDENTIFIER_MAX = 100  # Stripe's limit on identifier (and idempotency key) length


class MeterConfigError(Permanent):
    """The aggregate cannot go to Stripe as configured (no key, no subscription, no
    event name): a person fixes the configuration, then replays the intent."""


def identifier(aggregate_id: str) -> str:
    """The aggregate's public id, or (past Stripe's 100 characters) a digest of it.

    Never the license key: an aggregate opened before key digests has its key replaced
    by its digest here (and marked, so it does not meet the identifier of the aggregate
    opened for the same window since)."""
    public = public_id(aggregate_id)
    if len(public) <= _IDENTIFIER_MAX:
        return public
    return "usage:" + hashlib.sha256(public.encode()).hexdigest()


def _identifier(aggregate_id: str, open_: attempts.OpenAttempt | None) -> str:
    """What to send as the identifier: the one an earlier send used, if any, so that
    Stripe dedupes a re-send whatever version of the bridge made the first."""
    sent = open_.detail.get("identifier") if open_ is not None else None
    return sent if isinstance(sent, str) and sent else identifier(aggregate_id)


async def _customer(run: Run, license_: licenses.LicenseView, aggregate: ledger.Aggregate) -> str:
    rt = run.rt
    ref: str | None = license_.ref
    if not license_.ref.startswith("stripe:sub:"):
        ref = await in_thread(
            licenses.subscription_ref, rt.engine, aggregate.product_id, aggregate.key
        )
    if ref is None:
        raise MeterConfigError(
            f"configuration: key of product {aggregate.product_id} belongs to no Stripe "
            "subscription the bridge knows, so its meter events have no customer"
        )
    subscription = ref.removeprefix("stripe:sub:")
    customer = rt.stripe_customers.get(subscription)
    if customer is None:
        customer = await stripe_api.subscription_customer(subscription, **_stripe_options(run))
        rt.stripe_customers[subscription] = customer
    return customer


def _stripe_options(run: Run) -> dict[str, Any]:
    settings = run.rt.settings
    if settings.stripe_api_key is None:
        raise MeterConfigError("configuration: STRIPE_API_KEY is not set (stripe_meter sink)")
    http_client = run.rt.provider_client("stripe")  # the Stripe provider's shared client
    return {
        "api_key": settings.stripe_api_key.get_secret_value(),
        "api_base": settings.stripe_api_base,
        "http_client": http_client,
    }


async def send_meter_event(
    run: Run, license_: licenses.LicenseView, aggregate: ledger.Aggregate
) -> dict[str, Any]:
    rt, intent = run.rt, run.intent
    product = rt.config.usage.product_for(aggregate.product_id)
    event_name = product.event_name(aggregate.meter) if product is not None else None
    if event_name is None:
        raise MeterConfigError(
            f"configuration: product {aggregate.product_id} has no meter event name for "
            f"meter {aggregate.meter or '-'} ([[usage.product]] meter_event_name)"
        )
    open_ = intent.open_attempts.get(METHOD)
    first_sent = _first_sent(open_)
    event_id = _identifier(aggregate.id, open_)
    now = rt.now()
    if first_sent is not None and now - first_sent > DEDUPE_WINDOW:
        raise NeedsReview(
            f"a Stripe meter event was sent at {first_sent.isoformat()} and its reply lost; "
            "Stripe's dedupe by identifier may have lapsed, so it is not sent again. Check "
            f"the meter's events for identifier {event_id}: "
            f"{aggregate.describe()}"
        )
    customer = await _customer(run, license_, aggregate)
    event = stripe_api.MeterEvent(
        event_name=event_name,
        customer=customer,
        value=aggregate.quantity,
        identifier=event_id,
        timestamp=aggregate.window_start,
    )
    options = _stripe_options(run)
    detail = {
        "identifier": event.identifier,
        "value": event.value,
        "first_sent_at": (first_sent or now).isoformat(),
    }
    attempt_id = await in_thread(attempts.start_attempt, rt.engine, intent.id, METHOD, detail)
    deduped = False
    try:
        await run.send(METHOD, lambda: stripe_api.create_meter_event(event, **options))
    except stripe_api.DuplicateMeterEvent:
        deduped = True  # an earlier send of this very aggregate landed
    except (stripe_api.TransientStripeError, OutcomeUnknown):
        # Maybe applied, maybe not: the next run sends it again (Stripe dedupes it).
        await in_thread(attempts.finish_attempt, rt.engine, attempt_id, "unknown")
        raise
    except BaseException:
        await in_thread(attempts.finish_attempt, rt.engine, attempt_id, "refused")
        raise
    run.outcome.attempts[attempt_id] = "applied"
    if open_ is not None:
        run.outcome.attempts[open_.id] = "resent"  # this send settles the earlier one
    return {
        "sent": aggregate.quantity,
        "records": aggregate.records,
        "sink": "stripe_meter",
        "identifier": event.identifier,
        "resent": open_ is not None,
        "deduped": deduped,
    }


def _first_sent(open_: attempts.OpenAttempt | None) -> datetime | None:
    if open_ is None:
        return None
    raw = open_.detail.get("first_sent_at")
    return datetime.fromisoformat(raw) if isinstance(raw, str) else open_.sent_at

"""The ``stripe_meter`` usage sink: one Stripe Billing Meter event per aggregate.

The event's ``identifier`` is the aggregate's (the intent's) id, which names the key by
its digest only (:func:`bridge.core.intents.public_id`), and Stripe keeps an
identifier unique for at least 24 hours (a duplicate it answers as such counts as sent). So
unlike RecordUsage, a send whose outcome is unknown is simply sent again, as long as
the first send is less than ``DEDUPE_WINDOW`` old; past it, a re-send could count
twice, and the aggregate goes to a person instead.

The sink's provider (Stripe, ``bridge.stripe.meter``) is reached through its worker
hooks only: ``meter_customer`` says who the key's events are for (the customer of its
license, else of the Stripe subscription the ledger links the key to), ``send_meter``
sends one.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

from bridge import registry
from bridge.core.errors import Permanent, Retryable, Unknown
from bridge.core.intents import public_id
from bridge.core.providers import MeterEvent, WorkerHooks
from bridge.store import attempts, ledger, licenses
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


# The provider each meter sink sends to (``[[usage.product]] sink``).
SINK_PROVIDERS = {"stripe_meter": "stripe"}


def _hooks(sink: str) -> WorkerHooks:
    name = SINK_PROVIDERS.get(sink)
    hooks = registry.worker(name) if name is not None else None
    if hooks is None or hooks.meter_customer is None or hooks.send_meter is None:
        raise MeterConfigError(f"configuration: no provider sends meter events for sink {sink}")
    return hooks


async def _customer(
    run: Run, hooks: WorkerHooks, license_: licenses.LicenseView, aggregate: ledger.Aggregate
) -> str:
    rt = run.rt
    assert hooks.meter_customer is not None
    customer = await hooks.meter_customer(rt, license_.ref)
    if customer is None:
        # A key made otherwise (by hand, for another ref) bills the subscription the
        # ledger links it to.
        ref = await in_thread(
            licenses.subscription_ref, rt.engine, aggregate.product_id, aggregate.key
        )
        customer = await hooks.meter_customer(rt, ref) if ref is not None else None
    if customer is None:
        raise MeterConfigError(
            f"configuration: key of product {aggregate.product_id} belongs to no Stripe "
            "subscription the bridge knows, so its meter events have no customer"
        )
    return customer


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
    hooks = _hooks(aggregate.sink)
    customer = await _customer(run, hooks, license_, aggregate)
    event = MeterEvent(
        event_name=event_name,
        customer=customer,
        value=aggregate.quantity,
        identifier=event_id,
        timestamp=aggregate.window_start,
    )
    detail = {
        "identifier": event.identifier,
        "value": event.value,
        "first_sent_at": (first_sent or now).isoformat(),
    }
    attempt_id = await in_thread(attempts.start_attempt, rt.engine, intent.id, METHOD, detail)
    send = hooks.send_meter
    assert send is not None
    try:
        # True: an earlier send of this very aggregate landed.
        deduped = await run.send(METHOD, lambda: send(rt, event))
    except (Retryable, Unknown):
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
        "sink": aggregate.sink,
        "identifier": event.identifier,
        "resent": open_ is not None,
        "deduped": deduped,
    }


def _first_sent(open_: attempts.OpenAttempt | None) -> datetime | None:
    if open_ is None:
        return None
    raw = open_.detail.get("first_sent_at")
    return datetime.fromisoformat(raw) if isinstance(raw, str) else open_.sent_at

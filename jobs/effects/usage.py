"""RECORD_USAGE and REPORT_USAGE: metered billing.

REPORT_USAGE runs one usage aggregate (``bridge.store.ledger``): it seals the aggregate
(no record joins it after: its amount is final), then sends that amount to the sink
fixed when the aggregate was opened.

- ``cryptolens``: RecordUsage(ProductId, Key, Amount), which Cryptolens' recurring
  billing adds to the key's Stripe subscription item. It cannot be read back: a run
  that finds its own earlier RecordUsage unresolved (a lost reply, a worker that died
  mid-call) goes to a person with the aggregate shown, never re-sends. "The
  subscription item id could not be found" is a configuration error (the key is not
  linked to a subscription item): failed at once, never retried.
- ``stripe_meter``: see :mod:`jobs.effects.meter`.

RECORD_USAGE (:func:`record_usage`) is the bare call for one intent of that effect; no
planner makes one (usage goes in aggregates), see ``bridge.core.intents.Effect``.
"""

from __future__ import annotations

from typing import Any

from bridge.core.errors import Permanent
from bridge.cryptolens import Refused
from bridge.store import ledger, licenses
from jobs.dbcall import in_thread
from jobs.effects.meter import send_meter_event
from jobs.effects.run import Run, mutate
from jobs.errors import NeedsReview

RECORD_USAGE = "subscription/RecordUsage"


class UsageConfigError(Permanent):
    """The usage cannot be billed as configured (a key without a subscription item, a
    product without a meter event name): a person must fix the configuration."""


async def record_usage(run: Run, license_: licenses.LicenseView) -> dict[str, Any]:
    assert license_.product_id is not None and license_.key is not None
    rt = run.rt
    product_id, key = license_.product_id, license_.key
    if RECORD_USAGE in run.intent.open_attempts:
        # Cryptolens offers no way to read a usage counter back.
        raise NeedsReview("a RecordUsage reply was lost and usage cannot be read back")
    amount = int(run.intent.params["amount"])
    await mutate(
        run,
        RECORD_USAGE,
        {"amount": amount},
        lambda: rt.client.record_usage(product_id, key, amount),
    )
    return {"recorded": amount}


async def report_usage(run: Run, license_: licenses.LicenseView) -> dict[str, Any]:
    """Seal the intent's aggregate and send its amount to its sink, once."""
    rt = run.rt
    aggregate = await in_thread(ledger.seal, rt.engine, run.intent.id, rt.now())
    if aggregate is None:
        raise NeedsReview(f"usage aggregate {run.intent.id} is not in the ledger")
    if aggregate.sink == "stripe_meter":
        return await send_meter_event(run, license_, aggregate)
    return await _record(run, aggregate)


async def _record(run: Run, aggregate: ledger.Aggregate) -> dict[str, Any]:
    rt = run.rt
    if RECORD_USAGE in run.intent.open_attempts:
        raise NeedsReview(
            "RecordUsage was sent and its reply lost; Cryptolens cannot read usage back, so "
            f"it is not sent again. Check the key's Stripe subscription item for "
            f"{aggregate.describe()}, then mark this intent done or replay it."
        )
    amount = aggregate.quantity
    product_id, key = aggregate.product_id, aggregate.key
    try:
        await mutate(
            run,
            RECORD_USAGE,
            {"amount": amount, "aggregate": aggregate.id},
            lambda: rt.client.record_usage(product_id, key, amount),
        )
    except Refused as exc:
        if "subscription item" in exc.message.lower():
            raise UsageConfigError(
                f"configuration: key of product {product_id} is not linked to a Stripe "
                "subscription item in Cryptolens recurring billing (Cryptolens answered "
                f"{exc.message!r}); link it (Cryptolens Recurring Billing, a Stripe "
                "subscription whose metadata names the key), then replay this intent"
            ) from None
        raise
    return {"recorded": amount, "records": aggregate.records, "sink": "cryptolens"}

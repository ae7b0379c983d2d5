"""RECORD_USAGE: metered billing, which Cryptolens cannot read back."""

from __future__ import annotations

from typing import Any

from jobs import store
from jobs.effects.run import Run, mutate
from jobs.errors import NeedsReview


async def record_usage(run: Run, license_: store.LicenseView) -> dict[str, Any]:
    assert license_.product_id is not None and license_.key is not None
    rt = run.rt
    product_id, key = license_.product_id, license_.key
    method = "subscription/RecordUsage"
    if method in run.intent.open_attempts:
        # Cryptolens offers no way to read a usage counter back.
        raise NeedsReview("a RecordUsage reply was lost and usage cannot be read back")
    amount = int(run.intent.params["amount"])
    await mutate(
        run, method, {"amount": amount}, lambda: rt.client.record_usage(product_id, key, amount)
    )
    return {"recorded": amount}

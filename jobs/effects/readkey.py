"""READ_KEY: a Stripe purchase's new key read back for the buyer's lookup page.

GetKey is a read, repeated freely: no attempt row. Its result keeps the key's expiry
(unix seconds), or None for a key that does not expire: a key is time-limited when its
F1 is on, Cryptolens' convention (and the sandbox's: a template of period 0 makes keys
with F1 off). ``bridge.stripe.lookup`` answers with it, or with a later extension's.
"""

from __future__ import annotations

from typing import Any

from bridge.store import licenses
from jobs.effects.run import Run, unix


async def read_key(run: Run, license_: licenses.LicenseView) -> dict[str, Any]:
    assert license_.key is not None and license_.product_id is not None
    current = await run.rt.client.get_key(license_.product_id, license_.key)
    return {
        "product_id": license_.product_id,
        "expires": unix(current.expires) if current.f1 else None,
    }

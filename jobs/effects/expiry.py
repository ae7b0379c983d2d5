"""EXTEND: the key's expiry towards an absolute target, by the difference or not at all."""

from __future__ import annotations

from typing import Any

from bridge.rules.expiry import extension_days
from bridge.store import licenses
from jobs.effects.readback import applied_here, key_scope, settle_key_calls
from jobs.effects.run import Run, mutate, unix


async def extend(run: Run, license_: licenses.LicenseView) -> dict[str, Any]:
    assert license_.product_id is not None and license_.key is not None
    rt, method = run.rt, "key/ExtendLicense"
    product_id, key = license_.product_id, license_.key
    target = int(run.intent.params["expires_at"])
    current = await rt.client.get_key(product_id, key)
    await settle_key_calls(run, license_, current)
    expires, now = unix(current.expires), unix(rt.now())
    days = extension_days(expires, target, now)  # the dry run's too
    if days == 0:
        return {"expires": expires, "extended_days": 0, "recovered": applied_here(run, method)}
    detail = {"before": expires, "days": days, "target": target, "from_now": expires <= now}
    await mutate(
        run,
        method,
        detail,
        lambda: rt.client.extend_license(product_id, key, days),
        scope=key_scope(license_),
    )
    return {"expires_before": expires, "extended_days": days, "target": target}

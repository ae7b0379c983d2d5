"""WRITE_BACK: the key onto the CRM deal, so sales and support see it where they work.

A setting (a deal property, a custom field): writing the same value twice is harmless,
so no attempt row; the intent's result records what was written where.
"""

from __future__ import annotations

from typing import Any

from bridge import registry
from bridge.store import licenses
from jobs.effects.run import Run


async def write_back(run: Run, license_: licenses.LicenseView) -> dict[str, Any]:
    assert license_.key is not None
    intent = run.intent
    hooks = registry.hooks_for(intent.ref)
    hook = hooks.write_back if hooks is not None else None
    if hook is None:
        return {"written": False, "reason": "the provider has no write-back"}
    deal_id, key = str(intent.params["deal_id"]), license_.key
    result = await run.send("crm/write_back", lambda: hook(run.rt, deal_id, key))
    return {"written": True, **result}

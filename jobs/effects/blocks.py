"""BLOCK / UNBLOCK: sticky license ends, and payment-status blocks ordered by time."""

from __future__ import annotations

from typing import Any

from bridge.core.intents import ENDING_BLOCKS, Effect
from jobs import store
from jobs.effects.readback import key_scope, settle_key_calls
from jobs.effects.run import Run, mutate


async def set_block(run: Run, license_: store.LicenseView) -> dict[str, Any]:
    assert license_.product_id is not None and license_.key is not None
    rt, intent = run.rt, run.intent
    block = intent.effect is Effect.BLOCK
    reason = str(intent.params.get("reason", ""))
    ends = block and reason in ENDING_BLOCKS
    if license_.ended_by is not None and not ends:
        # The license ended (canceled, refunded, disputed): payment-status changes no
        # longer touch the key, whatever their order.
        return {"kept_blocked": license_.ended_by}
    decided_at = license_.block_decided_at
    if not ends and decided_at is not None and intent.occurred_at < decided_at:
        return {"superseded_by": decided_at}
    method = "key/BlockKey" if block else "key/UnblockKey"
    product_id, key = license_.product_id, license_.key
    current = await rt.client.get_key(product_id, key)
    await settle_key_calls(run, license_, current)
    changed = False
    if current.block != block:
        changed = await mutate(
            run,
            method,
            {"reason": reason},
            lambda: (
                rt.client.block_key(product_id, key)
                if block
                else rt.client.unblock_key(product_id, key)
            ),
            scope=key_scope(license_),
        )
    if ends:
        run.outcome.license.update(
            ended_by=license_.ended_by or reason,
            block_reason=license_.ended_by or reason,
            block_decided_at=max(decided_at or intent.occurred_at, intent.occurred_at),
        )
    else:
        run.outcome.license.update(
            block_decided_at=intent.occurred_at, block_reason=reason if block else None
        )
    return {"blocked": block, "changed": changed, "ends_license": ends}

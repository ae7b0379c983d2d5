"""BLOCK / UNBLOCK: ending blocks that hold from the moment they are stored, a won
dispute that lifts its own block, and payment-status blocks ordered by time (the rule:
``bridge.rules.blocks``, which the dry run applies too)."""

from __future__ import annotations

from typing import Any

from bridge.rules import blocks
from bridge.store import licenses, lookups
from jobs.dbcall import in_thread
from jobs.effects.readback import key_scope, settle_key_calls
from jobs.effects.run import Run, mutate

_METHODS = (blocks.BLOCK_KEY, blocks.UNBLOCK_KEY)


async def set_block(run: Run, license_: licenses.LicenseView) -> dict[str, Any]:
    assert license_.product_id is not None and license_.key is not None
    rt, intent = run.rt, run.intent
    # Read under the license lease: every block intent that runs after this one reads
    # what this run decides, and one stored after this read runs after it.
    stored = await in_thread(lookups.block_intents, rt.engine, license_.ref)
    this = blocks.Stored.of(intent.id, intent.effect, intent.params, intent.occurred_at)
    verdict = blocks.decide(
        this,
        stored,
        ended_by=license_.ended_by,
        decided_at=license_.block_decided_at,
        block_reason=license_.block_reason,
    )
    run.outcome.license.update(verdict.license)
    own = any(m in intent.open_attempts for m in _METHODS)
    if verdict.block is None and not own:
        # Nothing read, nothing sent: another intent's unresolved BlockKey (a
        # cancellation whose reply was lost) is left to its own run.
        return verdict.result
    product_id, key = license_.product_id, license_.key
    current = await rt.client.get_key(product_id, key)
    await settle_key_calls(run, license_, current)
    if verdict.block is None:  # only this intent's own earlier call to settle
        return verdict.result
    block, changed = verdict.block, False
    method = blocks.key_call(verdict, current.block)
    if method is not None:
        changed = await mutate(
            run,
            method,
            {"reason": this.reason},
            lambda: (
                rt.client.block_key(product_id, key)
                if block
                else rt.client.unblock_key(product_id, key)
            ),
            scope=key_scope(license_),
        )
    return {"blocked": block, "changed": changed, **verdict.result}

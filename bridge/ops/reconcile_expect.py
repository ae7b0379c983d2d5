"""What the store says each license should be in Cryptolens, read from the store alone
(``cryptolens-bridge reconcile``: :mod:`bridge.ops.reconcile`).

    key          a key creation was planned                  (else: nothing to check)
    customer     the customer the bridge linked, or the buyer's email if none yet
    expiry       the latest target of the extensions done (ExtendLicense rounds up)
    blocked      an ending block holds (canceled, refund, a dispute not won: the rule
                 of ``bridge.core.blocks``) or its payment-status block is in force
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bridge.core import blocks
from bridge.core.intents import Effect, Status, merge_start
from bridge.store import operator
from bridge.store.db import Engine
from bridge.store.tables import Intent, License

_BLOCK_CALLS = ("key/BlockKey", "key/UnblockKey")
# Attempts whose call may have changed the key: applied, or never known.
_MAY_HAVE_LANDED = (None, "applied", "unknown")
# Intents that will still act on their own: no drift is reported for what they cover.
# (Waiting ones wait for a key: with the creation failed, they wait for the repair.)
_UNDER_WAY = frozenset({Status.PENDING.value, Status.RUNNING.value})


@dataclass(frozen=True)
class Expected:
    """A license as the store says it should be in Cryptolens."""

    ref: str
    key: str | None
    product_id: int | None
    customer_id: int | None
    buyer: dict[str, Any]
    expires_at: int | None
    create: Intent | None  # the key creation that should have made the key
    create_params: dict[str, Any]
    under_way: bool  # an intent of it is still pending or running
    ending: tuple[blocks.Stored, ...] = ()  # the ending blocks in force, oldest first
    payment_block: str | None = None  # the payment-status block in force
    decided_at: int | None = None  # when that payment-status decision was made
    # The last BlockKey / UnblockKey of the bridge's that may have landed was a BlockKey:
    # a block on the key can be the bridge's own.
    blocked_by_us: bool = False
    customer_at: int = 0  # when the customer decision the store holds was made

    @property
    def blocked_for(self) -> str | None:
        """The reason the key should be blocked, or None."""
        return self.ending[0].reason if self.ending else self.payment_block


def expectations(engine: Engine, since: datetime | None = None) -> list[Expected]:
    """Every license with a planned key creation (created since ``since``, if given)."""
    store = operator.licenses_whole(engine, _BLOCK_CALLS, since)
    last_call: dict[str, str] = {}  # key scope -> the last block call that may have landed
    for scope, method, outcome in store.block_calls:
        if scope is not None and outcome in _MAY_HAVE_LANDED:
            last_call[scope] = method
    aliases = store.aliases
    by_ref: dict[str, list[Intent]] = {}
    for intent in store.intents:
        by_ref.setdefault(aliases.get(intent.license_ref, intent.license_ref), []).append(intent)
    result: list[Expected] = []
    seen: set[str] = set()
    for create in store.creates:
        ref = aliases.get(create.license_ref, create.license_ref)
        if ref in seen:
            continue
        seen.add(ref)
        params: dict[str, Any] = json.loads(create.params)
        for hint in store.hints.get(create.id, []):
            params = merge_start(params, json.loads(hint))
        intents = by_ref.get(ref, [])
        # The worker's block calls share the scope "key:<ref>" (jobs.effects.readback).
        ours = last_call.get(f"key:{ref}") == "key/BlockKey"
        result.append(
            _expected(ref, store.licenses.get(ref), create, params, intents, blocked_by_us=ours)
        )
    return result


def _expected(
    ref: str,
    license_: License | None,
    create: Intent,
    params: dict[str, Any],
    intents: list[Intent],
    *,
    blocked_by_us: bool = False,
) -> Expected:
    targets = [
        int(p["expires_at"])
        for i in intents
        if i.status == Status.DONE.value
        and i.effect in (Effect.EXTEND.value, Effect.CREATE_KEY.value)
        and (p := json.loads(i.params)).get("expires_at") is not None
    ]
    buyer: dict[str, Any] = dict(params.get("customer") or {})
    for i in intents:
        p = json.loads(i.params)
        if isinstance(p.get("customer"), dict):
            buyer = {**p["customer"], **buyer}
    stored = [
        blocks.Stored.of(i.id, Effect(i.effect), json.loads(i.params), i.occurred_at)
        for i in intents
        if i.effect in (Effect.BLOCK.value, Effect.UNBLOCK.value)
    ]
    # The customer the store holds was decided by the newest customer change applied, or
    # else by the link at the purchase (dated like the key's creation).
    customer_at = create.occurred_at
    if license_ is not None and license_.customer_decided_at is not None:
        customer_at = license_.customer_decided_at
    return Expected(
        ref=ref,
        key=license_.key if license_ else None,
        product_id=license_.product_id if license_ else None,
        customer_id=license_.customer_id if license_ else None,
        buyer=buyer,
        expires_at=max(targets) if targets else None,
        create=create,
        create_params=params,
        under_way=any(i.status in _UNDER_WAY for i in intents),
        ending=tuple(blocks.ending_in_force(stored)),
        payment_block=blocks.payment_block(license_.block_reason) if license_ else None,
        decided_at=license_.block_decided_at if license_ else None,
        customer_at=customer_at,
        blocked_by_us=blocked_by_us,
    )

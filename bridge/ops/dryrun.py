"""A dry run: the Cryptolens calls an intent would make now, from the key's current state.

``cryptolens-bridge replay ID --dry-run`` and the admin page's "plan" button print this. It
reads the store, Cryptolens (GetKey, GetCustomers, GetLicenseTemplates) and what the
worker asks a provider (a CRM deal's pipeline and buyer, Stripe's checkout line items),
and changes nothing: no attempt, no lease, no status. Every decision is the worker's
own function (``bridge.rules``, and ``bridge.template_choice`` for the template), so the
plan and the run cannot disagree (tests/test_dry_run_parity.py). Parameters are those the
client sends, minus the token.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from bridge import registry
from bridge.core.intents import Effect, merge_start
from bridge.core.providers import WorkerContext
from bridge.core.settings import ConfigTables, Settings
from bridge.cryptolens import CryptolensClient
from bridge.cryptolens.models import LicenseKey
from bridge.ops.context import ProviderContext
from bridge.ops.dryrun_create import plan_create
from bridge.ops.dryrun_plan import Call, DryRun, customer_calls
from bridge.rules import blocks, customers, events, expiry
from bridge.rules.deals import enriched, needs_deal
from bridge.store import lookups, operator
from bridge.store.db import Engine
from bridge.store.tables import Intent, License

__all__ = ["Call", "DryRun", "dry_run", "key_state", "planned"]


@dataclass(frozen=True)
class _Facts:
    intent: Intent
    params: dict[str, Any]
    ref: str
    license: License | None


def _facts(engine: Engine, intent_id: str) -> _Facts | None:
    found = operator.intent_facts(engine, intent_id)
    if found is None:
        return None
    params: dict[str, Any] = json.loads(found.intent.params)
    for hint in found.hints:  # a key creation's: what later start events said
        params = merge_start(params, json.loads(hint))
    return _Facts(found.intent, params, found.ref, found.license)


def key_state(found: LicenseKey) -> dict[str, Any]:
    return {
        "expires": found.expires.isoformat(),
        "blocked": found.block,
        "customer_id": found.customer.id if found.customer else None,
        "customer_email": found.customer.email if found.customer else None,
        "notes": found.notes,
    }


async def dry_run(
    engine: Engine,
    client: CryptolensClient,
    ctx: WorkerContext,
    intent_id: str,
    *,
    now: datetime | None = None,
) -> DryRun | None:
    """What running ``intent_id`` now would send; None when there is no such intent.
    ``ctx``: what the provider hooks the worker asks are given (``ProviderContext``)."""
    facts = _facts(engine, intent_id)
    if facts is None:
        return None
    intent, params, license_ = facts.intent, facts.params, facts.license
    key = license_.key if license_ is not None else None
    product_id = license_.product_id if license_ is not None else None
    plan = DryRun(intent.id, intent.effect, intent.status, facts.ref, key, product_id)
    if intent.status == "done":
        plan.notes.append(
            "done already: a replay is refused; the calls below are what a new run would send"
        )
    current: LicenseKey | None = None
    if key is not None and product_id is not None:
        current = await client.get_key(product_id, key)
        plan.state = key_state(current)
    effect = Effect(intent.effect)
    params = await _enriched(ctx, facts.ref, effect, params)
    moment = now or datetime.now(UTC)
    if effect is Effect.CREATE_KEY:
        waited = (moment - _aware(intent.created_at)).total_seconds()
        linked = license_.customer_id if license_ is not None else None
        await plan_create(plan, client, ctx, params, current, linked=linked, waited=waited)
        return plan
    if current is None or key is None or license_ is None:
        plan.notes.append("the license has no key yet: the intent waits for its creation")
        return plan
    target = {"ProductId": product_id, "Key": key}
    if effect is Effect.EXTEND:
        _plan_extend(plan, int(params["expires_at"]), current, moment, target)
    elif effect in (Effect.BLOCK, Effect.UNBLOCK):
        # The license's block and unblock intents, as the worker reads them.
        stored = lookups.block_intents(engine, facts.ref)
        _plan_block(plan, stored, intent, params, license_, current, target)
    elif effect is Effect.LINK_CUSTOMER:
        await _plan_link(plan, client, intent, params, license_, current, target)
    elif effect is Effect.REGISTER_EVENT:
        found = events.event(intent.id, params)
        event = {
            **target,
            "EventName": found.name,
            "Value": found.value,
            "Currency": found.currency,
            "Metadata": found.metadata,
        }
        plan.calls.append(Call("ai/RegisterEvent", event, "analytics, found again by Metadata"))
    elif effect is Effect.RECORD_USAGE:
        usage = {**target, "Amount": int(params["amount"])}
        plan.calls.append(Call("subscription/RecordUsage", usage, "metered usage"))
    return plan


class Configured(Protocol):
    """What the web app's state and the CLI both hold."""

    @property
    def settings(self) -> Settings: ...
    @property
    def config(self) -> ConfigTables: ...


async def planned(
    engine: Engine, client: CryptolensClient, where: Configured, intent_id: str
) -> DryRun | None:
    """:func:`dry_run` with the providers' clients opened for it, and closed after."""
    ctx = ProviderContext(where.settings, where.config)
    try:
        return await dry_run(engine, client, ctx, intent_id)
    finally:
        await ctx.aclose()


async def _enriched(
    ctx: WorkerContext, ref: str, effect: Effect, params: dict[str, Any]
) -> dict[str, Any]:
    """The params with the CRM deal's facts, read as the worker reads them first."""
    hooks = registry.hooks_for(ref)
    if hooks is None or hooks.deal is None or not needs_deal(effect, params):
        return params
    return enriched(params, await hooks.deal(ctx, str(params["deal_id"])))


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _plan_extend(
    plan: DryRun, goal: int, current: LicenseKey, moment: datetime, target: dict[str, Any]
) -> None:
    expires = int(_aware(current.expires).timestamp())
    days = expiry.extension_days(expires, goal, int(moment.timestamp()))
    if days == 0:
        plan.notes.append(f"expires {current.expires.isoformat()}: at or past the target")
        return
    why = f"expiry {current.expires.isoformat()} -> at least {_iso(goal)}"
    plan.calls.append(Call("key/ExtendLicense", {**target, "NoOfDays": days}, why))


def _iso(unix: int) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat()


def _plan_block(
    plan: DryRun,
    stored: list[blocks.Stored],
    intent: Intent,
    params: dict[str, Any],
    license_: License,
    current: LicenseKey,
    target: dict[str, Any],
) -> None:
    """The worker's rule (``bridge.rules.blocks``) on the same facts."""
    this = blocks.Stored.of(intent.id, Effect(intent.effect), params, intent.occurred_at)
    verdict = blocks.decide(
        this,
        stored,
        ended_by=license_.ended_by,
        decided_at=license_.block_decided_at,
        block_reason=license_.block_reason,
    )
    result = verdict.result
    method = blocks.key_call(verdict, current.block)
    if "kept_blocked" in result:
        plan.notes.append(f"the license ended ({result['kept_blocked']}): the key stays blocked")
    elif "superseded_by" in result:
        plan.notes.append(f"superseded by a later block decision (at {result['superseded_by']})")
    elif verdict.block is None:
        plan.notes.append(f"lifted: {result.get('lifted')}")
    elif method is None:
        plan.notes.append(f"the key is {'blocked' if verdict.block else 'unblocked'} already")
    else:
        plan.calls.append(Call(method, target, this.reason or method.rpartition("/")[2]))


async def _plan_link(
    plan: DryRun,
    client: CryptolensClient,
    intent: Intent,
    params: dict[str, Any],
    license_: License,
    current: LicenseKey,
    target: dict[str, Any],
) -> None:
    """The worker's rule (``bridge.rules.customers.link``) on the same facts."""
    decision = customers.link(
        params,
        occurred_at=intent.occurred_at,
        linked=license_.customer_id,
        decided_at=license_.customer_decided_at,
    )
    if decision.result is not None:
        plan.notes.append(f"nothing to link: {decision.result}")
        return
    customer_id: str | int
    if decision.customer_id is not None:  # a repair: Cryptolens' own link is compared
        if current.customer is not None and current.customer.id == decision.customer_id:
            plan.notes.append(f"the key is linked to customer {decision.customer_id} already")
            return
        customer_id = decision.customer_id
    else:
        assert decision.email is not None
        customer_id = await customer_calls(plan, client, decision.email, dict(decision.buyer))
    plan.calls.append(
        Call("key/ChangeCustomer", {**target, "CustomerId": customer_id}, "link the buyer")
    )

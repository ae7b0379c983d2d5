"""A dry run: the Cryptolens calls an intent would make now, from the key's current state.

``cryptolens-bridge replay ID --dry-run`` and the admin page's "plan" button print this. It
reads the store and Cryptolens (GetKey, GetCustomers, GetLicenseTemplates) and changes
nothing: no attempt, no lease, no status. The decisions follow the worker's effects
(``jobs/effects``): an extension by the days short of the target, a block only when the
key's flag differs and no later decision or license end overrides it (the worker's
rule, ``bridge.core.blocks``), a customer link only when the key has none. Parameters
are those the client sends, minus the token.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from bridge.config import BridgeConfig
from bridge.core import blocks
from bridge.core.intents import Effect, creation_notes, merge_start, notes_tag
from bridge.cryptolens import CryptolensClient
from bridge.cryptolens.client import CREATE_KEY_PARAMETERS
from bridge.cryptolens.models import LicenseKey
from bridge.store.tables import Intent, License, LicenseAlias, StartHint

DAY = 86400


@dataclass(frozen=True)
class Call:
    method: str
    params: dict[str, Any]
    why: str

    def line(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{self.method}({args})  # {self.why}"


@dataclass
class DryRun:
    intent_id: str
    effect: str
    status: str
    license_ref: str
    key: str | None
    product_id: int | None
    state: dict[str, Any] = field(default_factory=dict)  # the key as Cryptolens has it now
    calls: list[Call] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "intent": self.intent_id,
            "effect": self.effect,
            "status": self.status,
            "license": self.license_ref,
            "key": self.key,
            "product_id": self.product_id,
            "state": self.state,
            "calls": [{"method": c.method, "params": c.params, "why": c.why} for c in self.calls],
            "notes": self.notes,
        }


@dataclass(frozen=True)
class _Facts:
    intent: Intent
    params: dict[str, Any]
    ref: str
    license: License | None


def _facts(engine: Engine, intent_id: str) -> _Facts | None:
    with Session(engine) as s:
        intent = s.get(Intent, intent_id)
        if intent is None:
            return None
        alias = s.get(LicenseAlias, intent.license_ref)
        ref = alias.ref if alias is not None else intent.license_ref
        params: dict[str, Any] = json.loads(intent.params)
        if intent.effect == Effect.CREATE_KEY.value:
            hints = s.exec(
                select(StartHint.params)
                .where(col(StartHint.intent_id) == intent_id)
                .order_by(col(StartHint.id))
            ).all()
            for hint in hints:
                params = merge_start(params, json.loads(hint))
        return _Facts(intent, params, ref, s.get(License, ref))


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
    config: BridgeConfig,
    intent_id: str,
    *,
    now: datetime | None = None,
) -> DryRun | None:
    """What running ``intent_id`` now would send; None when there is no such intent."""
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
    if effect is Effect.CREATE_KEY:
        await _plan_create(plan, client, config, params, current)
        return plan
    if current is None or key is None or product_id is None:
        plan.notes.append("the license has no key yet: the intent waits for its creation")
        return plan
    moment = now or datetime.now(UTC)
    target = {"ProductId": product_id, "Key": key}
    if effect is Effect.EXTEND:
        goal = int(params["expires_at"])
        expires = int(current.expires.timestamp())
        if expires >= goal:
            plan.notes.append(f"expires {current.expires.isoformat()}: at or past the target")
        else:
            days = math.ceil((goal - max(expires, int(moment.timestamp()))) / DAY)
            why = f"expiry {current.expires.isoformat()} -> at least {_iso(goal)}"
            plan.calls.append(Call("key/ExtendLicense", {**target, "NoOfDays": days}, why))
    elif effect in (Effect.BLOCK, Effect.UNBLOCK):
        stored = _stored_blocks(engine, facts.ref)
        _plan_block(plan, stored, intent, params, license_, current, target)
    elif effect is Effect.LINK_CUSTOMER:
        await _plan_link(plan, client, params, current, target)
    elif effect is Effect.REGISTER_EVENT:
        metadata = dict(params.get("metadata") or {})
        metadata["intent"] = intent.id
        event = {
            **target,
            "EventName": params.get("event_name"),
            "Value": params.get("value"),
            "Currency": params.get("currency"),
            "Metadata": json.dumps(metadata, sort_keys=True, separators=(",", ":")),
        }
        plan.calls.append(Call("ai/RegisterEvent", event, "analytics, found again by Metadata"))
    elif effect is Effect.RECORD_USAGE:
        usage = {**target, "Amount": int(params["amount"])}
        plan.calls.append(Call("subscription/RecordUsage", usage, "metered usage"))
    return plan


def _iso(unix: int) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat()


def _stored_blocks(engine: Engine, ref: str) -> list[blocks.Stored]:
    """The license's block and unblock intents, under its ref or an alias."""
    with Session(engine) as s:
        refs = [ref, *s.exec(select(LicenseAlias.alias).where(col(LicenseAlias.ref) == ref))]
        rows = s.exec(
            select(Intent).where(
                col(Intent.effect).in_([Effect.BLOCK.value, Effect.UNBLOCK.value]),
                col(Intent.license_ref).in_(refs),
            )
        ).all()
        return [
            blocks.Stored.of(i.id, Effect(i.effect), json.loads(i.params), i.occurred_at)
            for i in rows
        ]


def _plan_block(
    plan: DryRun,
    stored: list[blocks.Stored],
    intent: Intent,
    params: dict[str, Any],
    license_: License | None,
    current: LicenseKey,
    target: dict[str, Any],
) -> None:
    """The worker's rule (``bridge.core.blocks.decide``) on the same facts."""
    this = blocks.Stored.of(intent.id, Effect(intent.effect), params, intent.occurred_at)
    verdict = blocks.decide(
        this,
        stored,
        ended_by=license_.ended_by if license_ else None,
        decided_at=license_.block_decided_at if license_ else None,
        block_reason=license_.block_reason if license_ else None,
    )
    result = verdict.result
    if "kept_blocked" in result:
        plan.notes.append(f"the license ended ({result['kept_blocked']}): the key stays blocked")
    elif "superseded_by" in result:
        plan.notes.append(f"superseded by a later block decision (at {result['superseded_by']})")
    elif verdict.block is None:
        plan.notes.append(f"lifted: {result.get('lifted')}")
    elif current.block == verdict.block:
        plan.notes.append(f"the key is {'blocked' if verdict.block else 'unblocked'} already")
    else:
        method = "key/BlockKey" if verdict.block else "key/UnblockKey"
        plan.calls.append(Call(method, target, this.reason or method.rpartition("/")[2]))


async def _customer_calls(
    plan: DryRun, client: CryptolensClient, buyer: dict[str, Any]
) -> str | int:
    """The buyer's customer id, or a placeholder for the one AddCustomer would return."""
    email = str(buyer["email"])
    matches = [
        c.id
        for c in await client.get_customers(search=email)
        if c.email and c.email.lower() == email.lower()
    ]
    if matches:
        plan.notes.append(f"customer {min(matches)} has the buyer's email")
        return min(matches)
    name = buyer.get("name") or email
    added = {
        "Name": name[:100],
        "Email": email[:100],
        "CompanyName": (buyer.get("name") or "")[:100],
    }
    plan.calls.append(Call("customer/AddCustomer", added, "no customer has the buyer's email"))
    return "<the new customer's id>"


async def _plan_link(
    plan: DryRun,
    client: CryptolensClient,
    params: dict[str, Any],
    current: LicenseKey,
    target: dict[str, Any],
) -> None:
    buyer = params.get("customer") or {}
    if current.customer is not None:
        plan.notes.append(f"the key is linked to customer {current.customer.id} already")
        return
    if not buyer.get("email"):
        plan.notes.append("no buyer email: nothing to link")
        return
    customer_id = await _customer_calls(plan, client, buyer)
    plan.calls.append(
        Call("key/ChangeCustomer", {**target, "CustomerId": customer_id}, "link the buyer")
    )


async def _plan_create(
    plan: DryRun,
    client: CryptolensClient,
    config: BridgeConfig,
    params: dict[str, Any],
    current: LicenseKey | None,
) -> None:
    tag = notes_tag(plan.intent_id)
    buyer = params.get("customer") or {}
    if current is not None and plan.key is not None:
        plan.notes.append("the license has its key: nothing is created")
        target = {"ProductId": plan.product_id, "Key": plan.key}
        if tag not in (current.notes or ""):
            notes = f"{current.notes or ''} {tag}".strip()[-500:]
            plan.calls.append(Call("key/ChangeNotes", {**target, "Notes": notes}, "tag the key"))
        if current.customer is None and buyer.get("email"):
            customer_id = await _customer_calls(plan, client, buyer)
            plan.calls.append(
                Call("key/ChangeCustomer", {**target, "CustomerId": customer_id}, "link the buyer")
            )
        return
    template_id, source = _template(config, params)
    if template_id is None:
        plan.notes.append(source)
        return
    templates = {t.id: t for t in await client.get_license_templates()}
    template = templates.get(template_id)
    if template is None:
        plan.notes.append(f"template {template_id} does not exist: the creation would fail")
        return
    plan.product_id = template.product_id
    if template.product_id not in config.cryptolens.create_from_template:
        notes = creation_notes(template.notes, tag)
        create: dict[str, Any] = {
            "ProductId": template.product_id,
            **{k: v for k, v in template.key_parameters().items() if k in CREATE_KEY_PARAMETERS},
            "Notes": notes,
        }
        if buyer.get("email"):
            create |= {
                "AddOrUseExistingCustomer": True,
                "Email": buyer["email"],
                "Name": buyer.get("name") or "",
                "CompanyName": buyer.get("company") or "",
            }
        why = f"template {template_id} from {source}, product {template.product_id}"
        plan.calls.append(Call("key/CreateKey", create, why + ", tagged, with the buyer"))
        for method, step in template.follow_up():
            plan.calls.append(Call(method, {**step, "Key": "<the new key>"}, "the template's"))
        return
    plan.calls.append(
        Call(
            "key/CreateKeyFromTemplate",
            {"LicenseTemplateId": template_id},
            f"template from {source}, product {template.product_id}",
        )
    )
    new = {"ProductId": template.product_id, "Key": "<the new key>"}
    plan.calls.append(Call("key/ChangeNotes", {**new, "Notes": tag}, "tag the key"))
    if buyer.get("email"):
        customer_id = await _customer_calls(plan, client, buyer)
        plan.calls.append(
            Call("key/ChangeCustomer", {**new, "CustomerId": customer_id}, "link the buyer")
        )


def _template(config: BridgeConfig, params: dict[str, Any]) -> tuple[int | None, str]:
    """The template and what names it, as ``bridge.template_choice.resolve_template`` decides
    without calling Stripe (a checkout's line items are only read by the worker)."""
    if params.get("template_id") is not None:
        return int(params["template_id"]), str(params.get("template_source") or "purchase")
    mapping = config.stripe.mapping_for(params.get("price_id"))
    if mapping is not None:
        return mapping.template_id, "the price mapping"
    if config.stripe.default_template_id is not None:
        return (
            config.stripe.default_template_id,
            "default_template_id (unless the checkout's line items name one)",
        )
    return None, "nothing names a template (metadata, price mapping, default): it would fail"

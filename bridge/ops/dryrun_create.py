"""A dry run of CREATE_KEY (``bridge.ops.dryrun``): the template the worker would choose
(``bridge.template_choice.choose_template``, asked the same way), then its calls."""

from __future__ import annotations

from typing import Any

from bridge.core.errors import NoTemplate
from bridge.core.intents import creation_notes, notes_tag
from bridge.core.providers import WorkerContext
from bridge.cryptolens import CryptolensClient
from bridge.cryptolens.config import CryptolensConfig
from bridge.cryptolens.keys import CREATE_KEY_PARAMETERS
from bridge.cryptolens.models import LicenseKey, LicenseTemplate
from bridge.ops.dryrun_plan import Call, DryRun, customer_calls
from bridge.rules.customers import buyer_email
from bridge.rules.templates import Choice
from bridge.template_choice import Waiting, choose_template


async def plan_create(
    plan: DryRun,
    client: CryptolensClient,
    ctx: WorkerContext,
    params: dict[str, Any],
    current: LicenseKey | None,
    *,
    linked: int | None,
    waited: float,
) -> None:
    """``linked``: the customer the license is linked to (the bridge's record);
    ``waited``: seconds since the intent was stored (the start events' wait)."""
    tag = notes_tag(plan.intent_id)
    email = buyer_email(params)
    buyer = params.get("customer") or {}
    if current is not None and plan.key is not None:
        plan.notes.append("the license has its key: nothing is created")
        target = {"ProductId": plan.product_id, "Key": plan.key}
        if tag not in (current.notes or ""):
            notes = f"{current.notes or ''} {tag}".strip()[-500:]
            plan.calls.append(Call("key/ChangeNotes", {**target, "Notes": notes}, "tag the key"))
        if linked is None and email is not None:
            customer_id = await customer_calls(plan, client, email, buyer)
            plan.calls.append(
                Call("key/ChangeCustomer", {**target, "CustomerId": customer_id}, "link the buyer")
            )
        return
    chosen = await _choice(plan, ctx, params, waited)
    if chosen is None:
        return
    templates = {t.id: t for t in await client.get_license_templates()}
    template = templates.get(chosen.template_id)
    if template is None:
        plan.notes.append(f"template {chosen.template_id} does not exist: the creation would fail")
        return
    plan.product_id = template.product_id
    why = f"template {chosen.template_id} from {chosen.source}, product {template.product_id}"
    if template.product_id not in CryptolensConfig.of(ctx.config).create_from_template:
        _create_tagged(plan, template, tag, email, buyer, why)
        return
    plan.calls.append(
        Call("key/CreateKeyFromTemplate", {"LicenseTemplateId": chosen.template_id}, why)
    )
    new = {"ProductId": template.product_id, "Key": "<the new key>"}
    plan.calls.append(Call("key/ChangeNotes", {**new, "Notes": tag}, "tag the key"))
    if email is not None:
        customer_id = await customer_calls(plan, client, email, buyer)
        plan.calls.append(
            Call("key/ChangeCustomer", {**new, "CustomerId": customer_id}, "link the buyer")
        )


async def _choice(
    plan: DryRun, ctx: WorkerContext, params: dict[str, Any], waited: float
) -> Choice | None:
    """The worker's template choice; while it would wait for other start events, what it
    takes once it waits no more (said in a note)."""
    try:
        chosen = await choose_template(ctx, plan.license_ref, params, waited=waited)
        if isinstance(chosen, Waiting):
            plan.notes.append(
                f"the worker waits up to {chosen.seconds:.0f} s more for the purchase's "
                "other start events (they may name a richer template); then:"
            )
            final = await choose_template(ctx, plan.license_ref, params, waited=float("inf"))
            assert isinstance(final, Choice)
            chosen = final
    except NoTemplate as exc:
        plan.notes.append(f"{exc}: the creation would fail")
        return None
    return chosen


def _create_tagged(
    plan: DryRun,
    template: LicenseTemplate,
    tag: str,
    email: str | None,
    buyer: dict[str, Any],
    why: str,
) -> None:
    unsupported = template.unsupported()
    if unsupported:
        plan.notes.append(f"the template makes calls the bridge cannot make: {unsupported}")
        return
    create: dict[str, Any] = {
        "ProductId": template.product_id,
        **{k: v for k, v in template.key_parameters().items() if k in CREATE_KEY_PARAMETERS},
        "Notes": creation_notes(template.notes, tag),
    }
    if email is not None:
        create |= {
            "AddOrUseExistingCustomer": True,
            "Email": email,
            "Name": buyer.get("name") or "",
            "CompanyName": buyer.get("company") or "",
        }
    plan.calls.append(Call("key/CreateKey", create, why + ", tagged, with the buyer"))
    for method, step in template.follow_up():
        plan.calls.append(Call(method, {**step, "Key": "<the new key>"}, "the template's"))

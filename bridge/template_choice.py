"""Which Cryptolens license template a key creation becomes: asked here, once, by the
worker's key creation (``jobs.effects.keys``) and the dry run (``bridge.ops.dryrun``).

The provider is found by the intent's license ref (``bridge.registry.hooks_for``); its
worker hook knows what its purchases name (Stripe: metadata, the price mapping, the
checkout's line items; a CRM: the deal's pipeline or product). A params ``template_id``
set by the planner is taken as it is (``bridge.rules.templates.named``), except by a
provider whose start comes in several events: it says when a later one can no longer
change it (:func:`final_template`). :func:`choose_template` puts them together with the
wait for the purchase's other start events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bridge import registry
from bridge.core.errors import NoTemplate
from bridge.core.providers import WorkerContext
from bridge.rules.templates import Choice, named, wait_left

__all__ = ["Choice", "NoTemplate", "Waiting", "choose_template", "final_template"]


@dataclass(frozen=True)
class Waiting:
    """No template yet: a start event still to come may name a richer one, for at most
    ``seconds`` more."""

    seconds: float


async def choose_template(
    ctx: WorkerContext, ref: str, params: dict[str, Any], *, waited: float
) -> Choice | Waiting:
    """The template a key creation of ``ref`` gets now, having waited ``waited`` seconds
    since its intent was stored (``float("inf")``: what it gets once it waits no more).

    Decided once no start event still to come can change it (:func:`final_template`);
    while one may, the creation waits up to ``BRIDGE_START_WAIT_SECONDS``, then takes
    the best hint in hand, else the default. NoTemplate when nothing names one and the
    provider has no default.
    """
    chosen = await final_template(ctx, ref, params)
    if chosen is not None:
        return Choice(*chosen)
    left = wait_left(waited, ctx.settings.start_wait_seconds)
    if left > 0:
        return Waiting(left)
    found = await resolve_template(ctx, ref, params, default=True)
    assert found is not None  # resolve_template raises NoTemplate otherwise
    return Choice(*found)


async def resolve_template(
    ctx: WorkerContext, ref: str, params: dict[str, Any], *, default: bool = True
) -> tuple[int, str] | None:
    """The template, and what named it; None (without ``default``) when nothing names one.
    NoTemplate when ``default`` is asked for and the provider has none either."""
    hint = named(params)
    if hint is not None:
        return hint
    hooks = registry.hooks_for(ref)
    hook = hooks.template if hooks is not None else None
    if hook is None:
        if not default:
            return None
        raise NoTemplate(f"nothing names a license template for {ref}")
    return await hook(ctx, params, default)


async def final_template(
    ctx: WorkerContext, ref: str, params: dict[str, Any]
) -> tuple[int, str] | None:
    """The template once no start event still to come can change it, and what named it;
    None while one may (the caller waits, then takes ``resolve_template``'s answer).
    NoTemplate when nothing names one and the provider has no default."""
    hooks = registry.hooks_for(ref)
    hook = hooks.final_template if hooks is not None else None
    if hook is None:
        return await resolve_template(ctx, ref, params)
    return await hook(ctx, ref, params)

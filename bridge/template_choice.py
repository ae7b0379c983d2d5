"""Which Cryptolens license template a key creation becomes: asked of its provider.

The provider is found by the intent's license ref (``bridge.registry.hooks_for``); its
worker hook knows what its purchases name (Stripe: metadata, the price mapping, the
checkout's line items; a CRM: the deal's pipeline or product). A params ``template_id``
set by the planner is taken as it is, except by a provider whose start comes in several
events: it says when a later one can no longer change it (:func:`final_template`).
"""

from __future__ import annotations

from typing import Any

from bridge import registry
from bridge.core.errors import NoTemplate
from bridge.core.providers import WorkerContext

__all__ = ["NoTemplate", "final_template", "resolve_template"]


async def resolve_template(
    ctx: WorkerContext, ref: str, params: dict[str, Any], *, default: bool = True
) -> tuple[int, str] | None:
    """The template, and what named it; None (without ``default``) when nothing names one.
    NoTemplate when ``default`` is asked for and the provider has none either."""
    if params.get("template_id") is not None:
        return int(params["template_id"]), str(params.get("template_source") or "purchase")
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

"""Which Cryptolens license template a Stripe purchase becomes (the worker's hook).

In order: Stripe metadata ``cryptolens_template_id`` (session, price or product — the
planner reads what the payload carries); else the ``[[stripe.price]]`` mapping in the
TOML file; else, for a checkout whose payload names no price, the session's line items
fetched from Stripe; else ``default_template_id``.
"""

from __future__ import annotations

from typing import Any

from bridge.core.errors import NoTemplate
from bridge.core.providers import WorkerContext
from bridge.core.settings import StripeConfig
from bridge.stripe.api import checkout_template_hints


def template_from_hints(hints: list[Any], config: StripeConfig) -> int | None:
    """The first line item that names a template by metadata, else by price mapping."""
    for hint in hints:
        for value in (
            getattr(hint, "price_template_id", None),
            getattr(hint, "product_template_id", None),
        ):
            if value is not None:
                return int(value)
    for hint in hints:
        mapping = config.mapping_for(getattr(hint, "price_id", None))
        if mapping is not None:
            return mapping.template_id
    return None


async def resolve_template(
    ctx: WorkerContext, params: dict[str, Any], default: bool
) -> tuple[int, str] | None:
    """The template a purchase names, and what named it: the planner's hint, the price
    mapping, the checkout's line items from Stripe (with ``STRIPE_API_KEY``), and, with
    ``default``, ``default_template_id`` (NoTemplate if there is none). Without
    ``default``, None when nothing names one."""
    config: StripeConfig = ctx.config.stripe
    if params.get("template_id") is not None:
        return int(params["template_id"]), str(params.get("template_source") or "purchase")
    mapping = config.mapping_for(params.get("price_id"))
    if mapping is not None:
        return mapping.template_id, "mapping"
    session_id = params.get("checkout_session")
    api_key = ctx.settings.stripe_api_key
    if session_id and api_key is not None and api_key.get_secret_value():
        hints = await checkout_template_hints(
            str(session_id),
            api_key=api_key.get_secret_value(),
            api_base=ctx.settings.stripe_api_base,
            http_client=ctx.provider_client("stripe"),
        )
        found = template_from_hints(list(hints), config)
        if found is not None:
            return found, "stripe_api"
    if not default:
        return None
    if config.default_template_id is not None:
        return config.default_template_id, "default"
    raise NoTemplate(
        f"no license template for price {params.get('price_id')!r}: set "
        "cryptolens_template_id metadata, a [[stripe.price]] mapping or default_template_id"
    )

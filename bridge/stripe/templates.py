"""Which Cryptolens license template a Stripe purchase becomes (the worker's hooks).

In order: Stripe metadata ``cryptolens_template_id`` (a subscription's Checkout Session,
the subscription or one-off purchase, the price, the product — the planner reads what
the payload carries); else the ``[[stripe.price]]`` mapping in the TOML file; else, for
a checkout whose payload names no price, the session's line items fetched from Stripe;
else ``default_template_id``.

A subscription's start events arrive in no fixed order, and the worker may run between
them. :func:`final_template` decides only once no later event can name a richer template:
with ``STRIPE_API_KEY`` it asks Stripe what they would say (the subscription's Checkout
Session and the subscription itself), at once; without it, it waits while an event that
may carry a richer source (``hints_from`` says which the merged ones carried) can still
come.
"""

from __future__ import annotations

from typing import Any

from bridge.core.errors import NoTemplate
from bridge.core.intents import HINTS_FROM, TEMPLATE_RANKS
from bridge.core.logs import get_logger
from bridge.core.providers import WorkerContext
from bridge.rules.templates import named
from bridge.stripe.api import (
    PermanentStripeError,
    StartHints,
    checkout_template_hints,
    subscription_start_hints,
)
from bridge.stripe.config import StripeConfig
from bridge.stripe.meter import http_client

log = get_logger(__name__)

#: The sources a subscription's start events carry in full, when they carry them: the
#: Checkout Session's metadata (``checkout.session.completed``), the subscription's and
#: its prices' (``customer.subscription.created``, the first invoice). A product's
#: metadata never comes in a webhook (products are not expanded there), a price mapping
#: follows from the price.
WEBHOOK_SOURCES = ("session", "purchase", "price")
_TOP = TEMPLATE_RANKS["session"]
_SUB_PREFIX = "stripe:sub:"


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


def _in_hand(params: dict[str, Any], config: StripeConfig) -> tuple[int, str, int] | None:
    """The best hint the merged start events carry: template, source, rank."""
    if params.get("template_id") is not None:
        source = str(params.get("template_source") or "purchase")
        rank = params.get("template_rank")
        return int(params["template_id"]), source, int(rank if rank is not None else 0)
    mapping = config.mapping_for(params.get("price_id"))
    if mapping is not None:
        return mapping.template_id, "mapping", TEMPLATE_RANKS["mapping"]
    return None


def richer_may_come(params: dict[str, Any], config: StripeConfig) -> bool:
    """Whether a start event that has not arrived may still name a richer template than
    the merged ones did (without asking Stripe): one of :data:`WEBHOOK_SOURCES` they did
    not carry outranks the hint in hand."""
    hand = _in_hand(params, config)
    rank = hand[2] if hand is not None else -1
    carried = set(params.get(HINTS_FROM) or ())
    return any(TEMPLATE_RANKS[s] > rank for s in WEBHOOK_SOURCES if s not in carried)


def _asked(hints: StartHints, config: StripeConfig) -> list[tuple[int, str, int]]:
    """What Stripe's answer names, as (template, source, rank), best source first."""
    found: list[tuple[int, str, int]] = []
    for template, source in ((hints.session, "session"), (hints.subscription, "purchase")):
        if template is not None:
            found.append((template, source, TEMPLATE_RANKS[source]))
    for attr, source in (("price_template_id", "price"), ("product_template_id", "product")):
        for item in hints.items:
            value = getattr(item, attr)
            if value is not None:
                found.append((value, source, TEMPLATE_RANKS[source]))
                break
    for item in hints.items:
        mapping = config.mapping_for(item.price_id)
        if mapping is not None:
            found.append((mapping.template_id, "mapping", TEMPLATE_RANKS["mapping"]))
            break
    return found


async def _from_events(
    ctx: WorkerContext, params: dict[str, Any], config: StripeConfig
) -> tuple[int, str] | None:
    if richer_may_come(params, config):
        return None
    return await resolve_template(ctx, params, True)


def _default(config: StripeConfig, params: dict[str, Any]) -> tuple[int, str]:
    if config.default_template_id is not None:
        return config.default_template_id, "default"
    raise NoTemplate(
        f"no license template for price {params.get('price_id')!r}: set "
        "cryptolens_template_id metadata, a [[stripe.price]] mapping or default_template_id"
    )


async def final_template(
    ctx: WorkerContext, ref: str, params: dict[str, Any]
) -> tuple[int, str] | None:
    """The template a key creation gets, once no later start event can change it, and
    what named it; None while a richer hint may still arrive (the worker waits for it up
    to ``BRIDGE_START_WAIT_SECONDS``, then takes :func:`resolve_template`'s answer).

    A one-off payment has no other event: decided at once. A subscription with
    ``STRIPE_API_KEY``: Stripe is asked what its other events would say, unless the hint
    in hand is already the richest there is (a Checkout Session's metadata).
    """
    config = StripeConfig.of(ctx.config)
    if params.get("start") != "subscription" or not ref.startswith(_SUB_PREFIX):
        return await resolve_template(ctx, params, True)
    hand = _in_hand(params, config)
    if hand is not None and hand[2] >= _TOP:
        return hand[0], hand[1]
    api_key = ctx.settings.stripe_api_key
    if api_key is None or not api_key.get_secret_value():
        return await _from_events(ctx, params, config)
    try:
        hints = await subscription_start_hints(
            ref.removeprefix(_SUB_PREFIX),
            api_key=api_key.get_secret_value(),
            api_base=ctx.settings.stripe_api_base,
            http_client=http_client(ctx),
        )
    except PermanentStripeError as exc:
        # A key of another account or mode, a restricted key without these reads: the
        # events still decide, as without a key (a transient error is retried instead).
        log.warning(
            "Stripe cannot say what the subscription's start names: its events decide",
            error=str(exc),
        )
        return await _from_events(ctx, params, config)
    # The hint in hand first: on a tie (the same source, read from an event or from
    # Stripe now) what the event said is kept, as merge_start keeps the first.
    candidates = ([hand] if hand is not None else []) + _asked(hints, config)
    if not candidates:
        return _default(config, params)
    best = max(candidates, key=lambda c: c[2])
    return best[0], best[1]


async def resolve_template(
    ctx: WorkerContext, params: dict[str, Any], default: bool
) -> tuple[int, str] | None:
    """The template a purchase names, and what named it: the planner's hint, the price
    mapping, the checkout's line items from Stripe (with ``STRIPE_API_KEY``), and, with
    ``default``, ``default_template_id`` (NoTemplate if there is none). Without
    ``default``, None when nothing names one."""
    config = StripeConfig.of(ctx.config)
    hint = named(params)
    if hint is not None:
        return hint
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
            http_client=http_client(ctx),
        )
        found = template_from_hints(list(hints), config)
        if found is not None:
            return found, "stripe_api"
    if not default:
        return None
    return _default(config, params)

"""The parts every Stripe object's plan is built of: the intents (create a key, link its
buyer, extend, block or unblock, register an event) and what they read from Stripe
objects (template hints, prices, amounts). See :mod:`bridge.stripe.plan`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from bridge.core.intents import HINTS_FROM, TEMPLATE_RANKS, Effect, IntentSpec
from bridge.core.money import currency_code, to_cryptolens_value
from bridge.stripe.config import StripeConfig
from bridge.stripe.payload import Obj, PayloadError

#: Metadata key naming the Cryptolens template, on a session, subscription, price or product.
TEMPLATE_KEY = "cryptolens_template_id"
DAY = 86400
_POSITIVE_INT = re.compile(r"[1-9][0-9]{0,9}")


def template_hint(owner: Obj | None) -> int | None:
    metadata = owner.opt_obj("metadata") if owner is not None else None
    if metadata is None:
        return None
    raw = metadata.data.get(TEMPLATE_KEY)
    if raw is None or raw == "":
        return None
    if not _POSITIVE_INT.fullmatch(str(raw).strip()):
        raise PayloadError(f"{metadata.where}: {TEMPLATE_KEY}={raw!r} is not a positive integer")
    return int(str(raw).strip())


def amount_currency(o: Obj, key: str) -> tuple[int, str]:
    amount = o.number(key)
    try:
        return amount, currency_code(o.text("currency"))
    except ValueError as exc:
        raise PayloadError(f"{o.where}: {exc}") from None


# ---------------------------------------------------------------------------------------
# Building intents.


@dataclass(frozen=True)
class Price:
    id: str | None
    product: str | None
    template_id: int | None  # from the price's metadata, else the expanded product's
    template_source: str | None = None  # "price" or "product": where template_id came from


def read_price(price: Obj | None, product: Obj | None = None) -> Price | None:
    if price is None:
        return None
    product = product or price.expanded("product")
    on_price, on_product = template_hint(price), template_hint(product)
    return Price(
        id=price.opt_text("id"),
        product=price.ref("product"),
        template_id=on_price or on_product,
        template_source="price" if on_price else "product" if on_product else None,
    )


@dataclass(frozen=True)
class Event:
    type: str
    created: int
    object: Obj
    previous: Obj | None


def create_key(
    ref: str,
    *,
    config: StripeConfig,
    occurred_at: int,
    owner_template: int | None,
    price: Price | None,
    checkout_session: str | None,
    customer: dict[str, str | None],
    expires_at: int | None,
    start: str,
    owner_source: str = "purchase",
    hints_from: list[str] | None = None,
) -> IntentSpec:
    price_id = price.id if price else None
    mapping = config.mapping_for(price_id)
    # The most specific hint wins: the purchase itself (a subscription's checkout session
    # over the subscription), then the price, then the product, then the TOML mapping.
    # None leaves it to the worker (line items, then the default). The source's rank lets
    # a later delivery of the same start replace a vaguer hint
    # (bridge.core.intents.merge_start).
    template_id: int | None = None
    source: str | None = None
    if owner_template is not None:
        template_id, source = owner_template, owner_source
    elif price is not None and price.template_id is not None:
        template_id, source = price.template_id, price.template_source
    elif mapping is not None:
        template_id, source = mapping.template_id, "mapping"
    return IntentSpec(
        id=f"{ref}:create_key",
        effect=Effect.CREATE_KEY,
        license_ref=ref,
        params={
            "template_id": template_id,
            "template_rank": TEMPLATE_RANKS[source] if source else None,
            "template_source": source,
            "price_id": price_id,
            "product_id_stripe": price.product if price else None,
            "checkout_session": checkout_session,
            "customer": customer,
            "expires_at": expires_at,
            # A subscription has three start events in no fixed order: its key creation
            # waits for the others while one of them may still name a richer template
            # (bridge.stripe.templates.final_template).
            "start": start,
            **({HINTS_FROM: sorted(hints_from)} if hints_from is not None else {}),
        },
        occurred_at=occurred_at,
    )


def link_customer(
    ref: str, customer: dict[str, str | None], *, occurred_at: int
) -> list[IntentSpec]:
    """The buyer's link, for a subscription start that names the buyer's email.

    Its own intent, not part of the key's creation: whichever start event names the buyer
    (the session and the first invoice do; ``customer.subscription.created`` only names a
    Stripe customer id), the key is linked once the key and the buyer are both known.
    """
    if not customer.get("email"):
        return []
    return [
        IntentSpec(
            id=f"{ref}:link_customer",
            effect=Effect.LINK_CUSTOMER,
            license_ref=ref,
            params={"customer": customer},
            occurred_at=occurred_at,
        )
    ]


def extend(
    ref: str, *, expires_at: int, period_end: int, invoice: str | None, occurred_at: int
) -> IntentSpec:
    return IntentSpec(
        id=f"{ref}:expires:{expires_at}",
        effect=Effect.EXTEND,
        license_ref=ref,
        params={"expires_at": expires_at, "invoice": invoice, "period_end": period_end},
        occurred_at=occurred_at,
    )


def block(
    ref: str,
    effect: Effect,
    *,
    reason: str,
    suffix: str,
    occurred_at: int,
    dispute: str | None = None,
) -> IntentSpec:
    params = {"reason": reason}
    if dispute is not None:
        # The dispute named, so that its close lifts its own block and no other.
        params["dispute"] = dispute
    return IntentSpec(
        id=f"{ref}:{effect.value}:{suffix}",
        effect=effect,
        license_ref=ref,
        params=params,
        occurred_at=occurred_at,
    )


def register(
    ref: str,
    *,
    name: str,
    key: str,
    amount: int,
    currency: str,
    ids: Mapping[str, str | None],
    occurred_at: int,
) -> list[IntentSpec]:
    """A RegisterEvent carrying only Stripe ids (no personal data); none for no money."""
    if amount == 0:
        return []
    intent_id = f"{ref}:event:{name}:{key}"
    metadata: dict[str, str] = {k: v for k, v in ids.items() if v is not None}
    metadata["intent"] = intent_id
    return [
        IntentSpec(
            id=intent_id,
            effect=Effect.REGISTER_EVENT,
            license_ref=ref,
            params={
                "event_name": name,
                "value": to_cryptolens_value(amount, currency),
                "currency": currency,
                "metadata": metadata,
            },
            occurred_at=occurred_at,
        )
    ]


def buyer(
    email: str | None, name: str | None, stripe_customer: str | None
) -> dict[str, str | None]:
    return {"email": email, "name": name, "stripe_customer": stripe_customer}

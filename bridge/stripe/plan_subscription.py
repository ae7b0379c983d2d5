"""What a subscription's events plan: its start (a key, its buyer's link, the first
extension), blocks and unblocks as its status moves, and the block at its end."""

from __future__ import annotations

from bridge.core.intents import Effect, IntentSpec, Plan
from bridge.mytracker.config import TrackerConfig
from bridge.stripe import plan_specs as specs
from bridge.stripe.config import StripeConfig
from bridge.stripe.payload import Obj, PayloadError

_LIVE_STATUSES = frozenset({"active", "trialing"})


def subscription_price(sub: Obj, config: StripeConfig) -> specs.Price | None:
    """The item that names the license: the first one we have a template hint for."""
    prices = [specs.read_price(item.opt_obj("price")) for item in sub.items("items")]
    known = [p for p in prices if p is not None]
    for p in known:
        if p.template_id is not None or config.mapping_for(p.id) is not None:
            return p
    return known[0] if known else None


def _subscription_period_end(sub: Obj) -> int | None:
    top = sub.opt_number("current_period_end")  # API <= 2025-02-24.acacia
    if top is not None:
        return top
    # basil: each item has its own period; the key lives as long as the longest one.
    ends = [e for item in sub.items("items") if (e := item.opt_number("current_period_end"))]
    return max(ends) if ends else None


def _subscription_start(sub: Obj, ev: specs.Event, config: StripeConfig) -> list[IntentSpec]:
    ref = f"stripe:sub:{sub.text('id')}"
    price = subscription_price(sub, config)
    period_end = _subscription_period_end(sub)
    grace = config.grace_for(price.id if price else None)
    expires_at = period_end + grace * specs.DAY if period_end is not None else None
    expanded = sub.expanded("customer")
    customer = specs.buyer(
        expanded.opt_text("email") if expanded else None,
        expanded.opt_text("name") if expanded else None,
        sub.ref("customer"),
    )
    intents = [
        specs.create_key(
            ref,
            config=config,
            occurred_at=ev.created,
            owner_template=specs.template_hint(sub),
            price=price,
            checkout_session=None,
            customer=customer,
            expires_at=expires_at,
            start="subscription",
            # Its metadata, and its items' prices as whole objects (with their metadata).
            hints_from=["purchase", "price"],
        ),
        *specs.link_customer(ref, customer, occurred_at=ev.created),
    ]
    if period_end is not None and expires_at is not None:
        intents.append(
            specs.extend(
                ref,
                expires_at=expires_at,
                period_end=period_end,
                invoice=None,
                occurred_at=ev.created,
            )
        )
    return intents


def subscription_created(ev: specs.Event, config: StripeConfig, tracker: TrackerConfig) -> Plan:
    sub = ev.object.named("subscription")
    status = sub.text("status")
    if status not in _LIVE_STATUSES:
        return Plan(
            ignored=f"subscription {sub.text('id')} is {status}: its key is made once it is paid"
        )
    return Plan(intents=_subscription_start(sub, ev, config))


def _blocking(config: StripeConfig) -> frozenset[str]:
    return frozenset({"unpaid", "past_due"} if config.unpaid_policy == "past_due" else {"unpaid"})


def subscription_updated(ev: specs.Event, config: StripeConfig, tracker: TrackerConfig) -> Plan:
    sub = ev.object.named("subscription")
    sub_id = sub.text("id")
    ref = f"stripe:sub:{sub_id}"
    status = sub.text("status")
    previous = ev.previous.data if ev.previous is not None else {}
    old = previous.get("status")
    blocking = _blocking(config)

    if old is None or old == status:
        if "cancel_at_period_end" in previous or "cancel_at" in previous:
            return Plan(
                ignored=f"subscription {sub_id} cancellation schedule changed; the key stays "
                "valid until customer.subscription.deleted"
            )
        if "current_period_end" in previous or "items" in previous:
            return Plan(
                ignored=f"subscription {sub_id} billing period changed; "
                "the paid invoice extends the key"
            )
        return Plan(ignored=f"subscription {sub_id} changed without a status change")
    if not isinstance(old, str):
        raise PayloadError(f"{sub.where}: previous_attributes.status has the wrong type")

    if status == "canceled":
        # customer.subscription.deleted plans the same id; whichever comes first counts.
        block = specs.block(
            ref, Effect.BLOCK, reason="canceled", suffix="canceled", occurred_at=ev.created
        )
        return Plan(intents=[block])
    if status in blocking and old not in blocking:
        block = specs.block(
            ref,
            Effect.BLOCK,
            reason=status,
            suffix=f"{status}:{ev.created}",
            occurred_at=ev.created,
        )
        return Plan(intents=[block])
    if status in _LIVE_STATUSES and old in blocking:
        unblock = specs.block(
            ref, Effect.UNBLOCK, reason="active", suffix=str(ev.created), occurred_at=ev.created
        )
        return Plan(intents=[unblock])
    if status in _LIVE_STATUSES and old == "incomplete":
        # The first payment went through: one more way for the key to be made.
        return Plan(intents=_subscription_start(sub, ev, config))
    return Plan(
        ignored=f"subscription {sub_id} went {old} -> {status}: nothing to do under "
        f"unpaid_policy {config.unpaid_policy!r}"
    )


def subscription_deleted(ev: specs.Event, config: StripeConfig, tracker: TrackerConfig) -> Plan:
    sub = ev.object.named("subscription")
    ref = f"stripe:sub:{sub.text('id')}"
    return Plan(
        intents=[
            specs.block(
                ref, Effect.BLOCK, reason="canceled", suffix="canceled", occurred_at=ev.created
            )
        ]
    )

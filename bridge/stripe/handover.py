"""What a Stripe purchase's key owes its buyer, planned beside its creation.

For every key creation a Stripe event plans (``<ref>:create_key``), with the options on:

- ``[stripe] license_lookup``: the alias ``stripe:cs:<session>`` -> the license, so the
  checkout session the buyer returns with names the license (``bridge.stripe.lookup``),
  and ``<ref>:read_key``, which reads the new key's expiry back for that page;
- ``[stripe] write_back``: ``<ref>:stripe_write_back``, the key onto the subscription or
  the payment intent (``bridge.stripe.writeback``). A purchase that paid nothing has no
  payment intent (``stripe:cs:`` refs), so nothing to write onto.

Ids come from the license ref, so the three start events of a subscription (and every
redelivery or catch-up) plan each of them once.
"""

from __future__ import annotations

from bridge.core.intents import Effect, IntentSpec, Plan
from bridge.stripe.config import StripeConfig

SESSION_ALIAS = "stripe:cs:"
# License ref prefix -> the Stripe object the key is written onto.
WRITE_TARGETS = {"stripe:sub:": "subscription", "stripe:pi:": "payment_intent"}


def session_alias(session_id: str) -> str:
    return SESSION_ALIAS + session_id


def with_handover(plan: Plan, config: StripeConfig) -> Plan:
    """``plan`` plus the lookup's alias and intents and the write-back, as configured."""
    if plan.ignored or not (config.license_lookup or config.write_back):
        return plan
    intents, aliases = list(plan.intents), list(plan.aliases)
    for spec in plan.intents:
        if spec.effect is not Effect.CREATE_KEY:
            continue
        ref = spec.license_ref
        if config.license_lookup:
            session = spec.params.get("checkout_session")
            if isinstance(session, str) and session_alias(session) != ref:
                aliases.append((session_alias(session), ref))
            intents.append(_follow(ref, Effect.READ_KEY, {}, spec.occurred_at))
        if config.write_back:
            for prefix, kind in WRITE_TARGETS.items():
                if ref.startswith(prefix):
                    params = {"object": kind, "id": ref.removeprefix(prefix)}
                    intents.append(_follow(ref, Effect.STRIPE_WRITE_BACK, params, spec.occurred_at))
    return Plan(intents=intents, aliases=aliases, ignored=plan.ignored)


def _follow(ref: str, effect: Effect, params: dict[str, str], occurred_at: int) -> IntentSpec:
    return IntentSpec(
        id=f"{ref}:{effect.value}",
        effect=effect,
        license_ref=ref,
        params=params,
        occurred_at=occurred_at,
    )

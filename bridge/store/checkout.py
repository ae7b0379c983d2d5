"""What the bridge holds about the purchase a Stripe Checkout Session made: read-only,
for the buyer's lookup (``bridge.stripe.lookup``).

A session names its license through the alias ``stripe:cs:<session>`` that its
delivery stored (``bridge.stripe.handover``), or is the license itself (a purchase that
paid nothing has no payment intent: ``stripe:cs:<session>``). The purchase exists once
its key creation is stored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, text

from bridge.core.intents import Effect, Status

DAY = 86400
_ALIAS = text("SELECT ref FROM license_alias WHERE alias = :alias")
_INTENT = text("SELECT status, occurred_at, result FROM intent WHERE id = :id")
_LICENSE = text('SELECT product_id, "key" FROM license WHERE ref = :ref')
_EXTENDED = text(
    "SELECT result FROM intent WHERE license_ref = :ref AND effect = :effect AND status = :done"
)


@dataclass(frozen=True)
class Purchase:
    """``bought_at``: when its key creation happened (the provider's unix seconds).
    ``read``: what ``read_key`` found once it is done (None before); ``planned``: whether
    a ``read_key`` is stored at all (not for a purchase from before the lookup was on).
    ``extended_to``: the newest expiry the license's applied extensions set (unix
    seconds; None: none)."""

    ref: str
    bought_at: int
    key: str | None
    product_id: int | None
    read: dict[str, Any] | None
    planned: bool
    extended_to: int | None


def _result(raw: str | None) -> dict[str, Any]:
    value = json.loads(raw) if raw else None
    return value if isinstance(value, dict) else {}


def _reached(result: dict[str, Any]) -> int:
    """The expiry an applied extension left: the key's own when it was already at or past
    the target ("expires"); else the expiry before plus the whole days added (what
    ExtendLicense does to a key that has not expired), at least the target."""
    if result.get("expires") is not None:
        return int(result["expires"])
    target = int(result.get("target") or 0)
    before, days = result.get("expires_before"), result.get("extended_days")
    if isinstance(before, int) and isinstance(days, int):
        return max(target, before + days * DAY)
    return target


def purchase(engine: Engine, alias: str) -> Purchase | None:
    """The purchase of the session whose alias is ``alias`` (``stripe:cs:<id>``), or None
    when no delivery of it is stored."""
    with engine.connect() as conn:
        ref = conn.execute(_ALIAS, {"alias": alias}).scalar_one_or_none() or alias
        creation = conn.execute(_INTENT, {"id": f"{ref}:create_key"}).one_or_none()
        if creation is None:
            return None
        license_ = conn.execute(_LICENSE, {"ref": ref}).one_or_none()
        read = conn.execute(_INTENT, {"id": f"{ref}:{Effect.READ_KEY.value}"}).one_or_none()
        extended = conn.execute(
            _EXTENDED, {"ref": ref, "effect": Effect.EXTEND.value, "done": Status.DONE.value}
        ).scalars()
        reached = [_reached(r) for r in map(_result, extended)]
    key = license_[1] if license_ is not None else None
    return Purchase(
        ref=ref,
        bought_at=int(creation[1]),
        key=key or None,
        product_id=license_[0] if license_ is not None else None,
        read=_result(read[2]) if read is not None and read[0] == Status.DONE.value else None,
        planned=read is not None,
        extended_to=max((r for r in reached if r > 0), default=None),
    )

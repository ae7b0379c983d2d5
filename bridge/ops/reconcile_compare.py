"""The drift between what the store expects of a license and the key Cryptolens holds,
and the intent that repairs each (``cryptolens-bridge reconcile``:
:mod:`bridge.ops.reconcile`).

:func:`compare` takes what the store expects and the key as read, and nothing else: how
keys are read (``bridge.ops.reconcile_read``) can change apart.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from bridge.core.intents import Effect, IntentSpec, Status
from bridge.cryptolens.models import LicenseKey
from bridge.ops.reconcile_expect import Expected


@dataclass(frozen=True)
class Drift:
    ref: str
    kind: str
    detail: str
    key: str | None = None
    repair: IntentSpec | None = None

    def as_json(self) -> dict[str, Any]:
        repair = None
        if self.repair is not None:
            repair = {**asdict(self.repair), "effect": self.repair.effect.value}
        return {
            "license": self.ref,
            "kind": self.kind,
            "detail": self.detail,
            "key": self.key,
            "repair": repair,
        }


#: Drift that is reported and never repaired, nor counted for the exit status: the
#: vendor's own doing in Cryptolens.
REPORTED_ONLY = frozenset({"manual_block"})


@dataclass
class Report:
    checked: int = 0
    drift: list[Drift] = field(default_factory=list)
    stored: list[str] = field(default_factory=list)  # repair intents stored by this run
    errors: dict[str, str] = field(default_factory=dict)  # license -> why it was not checked

    @property
    def actionable(self) -> list[Drift]:
        """The drift a person or ``--repair`` should act on (all but REPORTED_ONLY)."""
        return [d for d in self.drift if d.kind not in REPORTED_ONLY]


def _spec(
    want: Expected, kind: str, value: object, effect: Effect, params: dict[str, Any], at: int
) -> IntentSpec:
    return IntentSpec(
        id=f"{want.ref}:reconcile:{kind}:{value}",
        effect=effect,
        license_ref=want.ref,
        params=params,
        occurred_at=at,
    )


def compare(want: Expected, found: LicenseKey | None) -> list[Drift]:
    """The drift between what the store expects and the key Cryptolens holds."""
    if want.under_way:
        return []  # the worker has work left on it: it is not drift yet
    create = want.create
    if want.key is not None and found is None:
        detail = f"the key {want.key} is gone from Cryptolens: a person decides"
        return [Drift(want.ref, "no_key", detail, want.key)]
    if want.key is None or found is None:
        if create is None:
            return []
        if create.status == Status.NEEDS_REVIEW.value:
            detail = "its key creation needs review: claim the key on the admin page"
            return [Drift(want.ref, "no_key", detail)]
        repair = _spec(
            want, "create_key", create.id, Effect.CREATE_KEY, want.create_params, create.occurred_at
        )
        why = f"paid, but no key (key creation {create.status}: {create.last_error or ''})"
        return [Drift(want.ref, "no_key", why.strip(), None, repair)]
    drifts: list[Drift] = []
    key, at = want.key, create.occurred_at if create else 0
    linked = found.customer.id if found.customer else None
    if want.customer_id is not None and linked != want.customer_id:
        params = {"customer": want.buyer, "customer_id": want.customer_id}
        # Dated like the decision it restores: a newer contact change still wins.
        when = want.customer_at
        repair = _spec(want, "customer", want.customer_id, Effect.LINK_CUSTOMER, params, when)
        detail = f"linked to customer {linked}, the bridge linked {want.customer_id}"
        drifts.append(Drift(want.ref, "customer", detail, key, repair))
    elif want.customer_id is None and linked is None and want.buyer.get("email"):
        repair = _spec(
            want, "customer", "buyer", Effect.LINK_CUSTOMER, {"customer": want.buyer}, at
        )
        drifts.append(Drift(want.ref, "customer", "not linked to the buyer", key, repair))
    expires = int(found.expires.timestamp())
    if want.expires_at is not None and expires < want.expires_at:
        target = want.expires_at
        repair = _spec(want, "expires", target, Effect.EXTEND, {"expires_at": target}, at)
        detail = f"expires {found.expires.isoformat()}, paid until {target} (unix)"
        drifts.append(Drift(want.ref, "expiry", detail, key, repair))
    drifts.extend(_block_drift(want, found))
    return drifts


def _block_drift(want: Expected, found: LicenseKey) -> list[Drift]:
    key, decided = want.key, want.decided_at or 0
    if want.blocked_for is None and found.block:
        if not want.blocked_by_us:
            # The vendor blocked it in Cryptolens: theirs to lift, never the bridge's.
            detail = "blocked in Cryptolens, not by the bridge: left as it is"
            return [Drift(want.ref, "manual_block", detail, key)]
        repair = _spec(want, "unblock", decided, Effect.UNBLOCK, {"reason": "reconcile"}, decided)
        return [Drift(want.ref, "blocked", "blocked, and nothing says why", key, repair)]
    if want.blocked_for is not None and not found.block:
        if want.ending:
            # The ending block it restores, dated and named like it (a won dispute lifts
            # both).
            end = want.ending[0]
            params: dict[str, Any] = {"reason": end.reason, "repairs": end.id}
            if end.dispute is not None:
                params["dispute"] = end.dispute
            value = f"{end.reason}:{end.dispute}" if end.dispute else end.reason
            repair = _spec(want, "block", value, Effect.BLOCK, params, end.occurred_at)
        else:
            reason = want.blocked_for
            value = f"{reason}:{decided}"
            repair = _spec(want, "block", value, Effect.BLOCK, {"reason": reason}, decided)
        detail = f"not blocked though {want.blocked_for}"
        return [Drift(want.ref, "not_blocked", detail, key, repair)]
    return []

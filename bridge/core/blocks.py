"""Whether a block or unblock touches a key: one rule for the worker
(``jobs.effects.blocks``), the dry run (``bridge.ops.dryrun``) and reconcile.

A license's key is blocked while an *ending* block holds (a cancellation, a full refund,
a dispute not won) or while its newest payment-status decision is a block (unpaid, past
due, a CRM deal lost). The two are kept apart:

- An ending block holds from the moment its intent is *stored*, not from the moment its
  BlockKey is known applied: an unblock that runs while the cancellation's reply is lost
  (or before the cancellation's run) must not lift it. So the rule reads the license's
  stored block intents, whatever their status.
- A dispute the vendor won (``charge.dispute.closed``, status ``won``) lifts that
  dispute's block, in either order of delivery; the key is then unblocked unless another
  ending block holds or the newest payment-status decision is a block.
- Payment-status decisions are ordered by their provider time on the license
  (``block_decided_at``, ``block_reason``), recorded even while an ending block holds, so
  the state they leave is right once the ending block is lifted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.core.intents import ENDING_BLOCKS, Effect

#: The reason of the UNBLOCK a won dispute plans: it lifts its own dispute's block only.
DISPUTE_WON = "dispute_won"
_DISPUTE_ID = ":block:dispute:"


@dataclass(frozen=True)
class Stored:
    """A block or unblock intent stored for the license (under its ref or an alias)."""

    id: str
    effect: Effect
    reason: str
    occurred_at: int
    dispute: str | None = None  # the Stripe dispute a dispute block or lift names

    @classmethod
    def of(cls, id_: str, effect: Effect, params: Mapping[str, Any], occurred_at: int) -> Stored:
        reason = str(params.get("reason", ""))
        dispute = params.get("dispute")
        if dispute is None and reason == "dispute" and _DISPUTE_ID in id_:
            # Dispute blocks stored before they named their dispute: ``<ref>:block:dispute:<id>``.
            dispute = id_.rpartition(_DISPUTE_ID)[2]
        return cls(id_, effect, reason, occurred_at, str(dispute) if dispute else None)

    @property
    def ends(self) -> bool:
        return self.effect is Effect.BLOCK and self.reason in ENDING_BLOCKS

    @property
    def lifts(self) -> bool:
        return self.effect is Effect.UNBLOCK and self.reason == DISPUTE_WON


def ending_in_force(stored: Iterable[Stored]) -> list[Stored]:
    """The license's ending blocks that hold: every one stored, but a dispute's whose
    dispute was won. Oldest first."""
    items = list(stored)
    won = {s.dispute for s in items if s.lifts and s.dispute}
    holding = [s for s in items if s.ends and not (s.reason == "dispute" and s.dispute in won)]
    return sorted(holding, key=lambda s: (s.occurred_at, s.id))


def payment_block(block_reason: str | None) -> str | None:
    """The payment-status block in force, from ``license.block_reason``. Before ending
    blocks were kept apart, an ending block wrote its reason there too: not one."""
    return block_reason if block_reason not in ENDING_BLOCKS else None


@dataclass(frozen=True)
class Verdict:
    """What one block or unblock does: ``block`` is the key's flag to set (None: the key
    is left as it is), ``license`` the facts to write, ``result`` what the intent says."""

    block: bool | None
    license: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)


def decide(
    intent: Stored,
    stored: Iterable[Stored],
    *,
    ended_by: str | None,
    decided_at: int | None,
    block_reason: str | None,
) -> Verdict:
    """The verdict for ``intent`` given the license's stored block intents and facts."""
    items = [s for s in stored if s.id != intent.id]
    holding = ending_in_force([*items, intent])
    if intent.ends:
        if all(s.id != intent.id for s in holding):
            return Verdict(None, result={"lifted": f"dispute {intent.dispute} won"})
        return Verdict(True, {"ended_by": ended_by or intent.reason}, {"ends_license": True})
    if intent.lifts:
        if holding:
            reasons = [s.reason for s in holding]
            still = ended_by if ended_by in reasons else reasons[0]
            return Verdict(None, {"ended_by": still}, {"kept_blocked": still})
        payment = payment_block(block_reason)
        return Verdict(payment is not None, {"ended_by": None}, {"lifted": intent.dispute})
    if decided_at is not None and intent.occurred_at < decided_at:
        return Verdict(None, result={"superseded_by": decided_at})
    block = intent.effect is Effect.BLOCK
    facts = {
        "block_decided_at": intent.occurred_at,
        "block_reason": intent.reason if block else None,
    }
    if holding:
        # The license ended: the decision is recorded (it holds once the end is lifted),
        # the key is left blocked.
        still = ended_by if ended_by in [s.reason for s in holding] else holding[0].reason
        return Verdict(None, facts, {"kept_blocked": still})
    return Verdict(block, facts)

"""``bridge.core.blocks``: the one rule for blocks, as the worker, the dry run and
reconcile apply it (the runs against the sandbox are in tests/scenarios/test_effects_races.py)."""

from __future__ import annotations

from bridge.core.blocks import DISPUTE_WON, Stored, decide, ending_in_force, payment_block
from bridge.core.intents import Effect

REF = "stripe:pi:pi_1"


def dispute(dispute_id: str, at: int) -> Stored:
    params = {"reason": "dispute", "dispute": dispute_id}
    return Stored.of(f"{REF}:block:dispute:{dispute_id}", Effect.BLOCK, params, at)


def won(dispute_id: str, at: int) -> Stored:
    params = {"reason": DISPUTE_WON, "dispute": dispute_id}
    return Stored.of(f"{REF}:unblock:{DISPUTE_WON}:{dispute_id}", Effect.UNBLOCK, params, at)


def status(reason: str, at: int) -> Stored:
    effect = Effect.UNBLOCK if reason == "active" else Effect.BLOCK
    return Stored.of(f"{REF}:{effect.value}:{reason}:{at}", effect, {"reason": reason}, at)


def cancel(at: int) -> Stored:
    return Stored.of(f"{REF}:block:canceled", Effect.BLOCK, {"reason": "canceled"}, at)


class TestStored:
    def test_a_dispute_block_stored_before_it_named_its_dispute_is_read_from_its_id(
        self,
    ) -> None:
        old = Stored.of(f"{REF}:block:dispute:dp_9", Effect.BLOCK, {"reason": "dispute"}, 1)
        assert old.dispute == "dp_9"
        assert ending_in_force([old, won("dp_9", 2)]) == []

    def test_a_win_lifts_only_its_own_dispute(self) -> None:
        one, two = dispute("dp_1", 1), dispute("dp_2", 2)
        assert ending_in_force([one, two, won("dp_1", 3)]) == [two]

    def test_ending_blocks_hold_oldest_first_whatever_the_store_order(self) -> None:
        assert ending_in_force([cancel(5), dispute("dp_1", 1)]) == [dispute("dp_1", 1), cancel(5)]

    def test_an_ending_reason_in_block_reason_is_not_a_payment_block(self) -> None:
        assert (payment_block("refund"), payment_block("unpaid"), payment_block(None)) == (
            None,
            "unpaid",
            None,
        )


class TestDecide:
    def test_a_stored_ending_block_keeps_an_older_unblock_from_the_key(self) -> None:
        """Its outcome unknown (``ended_by`` not written yet): it holds all the same."""
        active = status("active", 10)
        verdict = decide(
            active, [cancel(30), active], ended_by=None, decided_at=None, block_reason=None
        )
        assert verdict.block is None
        assert verdict.result == {"kept_blocked": "canceled"}
        # The payment status is recorded, for a later lift.
        assert verdict.license == {"block_decided_at": 10, "block_reason": None}

    def test_a_dispute_delivered_after_its_win_does_nothing(self) -> None:
        block = dispute("dp_1", 1)
        verdict = decide(
            block, [won("dp_1", 2), block], ended_by=None, decided_at=None, block_reason=None
        )
        assert (verdict.block, verdict.license) == (None, {})

    def test_a_win_unblocks_unless_the_newest_payment_status_is_a_block(self) -> None:
        lift = won("dp_1", 9)
        stored = [dispute("dp_1", 1), lift]
        assert (
            decide(lift, stored, ended_by="dispute", decided_at=5, block_reason=None).block is False
        )
        unpaid = decide(lift, stored, ended_by="dispute", decided_at=5, block_reason="unpaid")
        assert (unpaid.block, unpaid.license) == (True, {"ended_by": None})

    def test_a_win_keeps_the_end_another_block_holds(self) -> None:
        lift = won("dp_1", 9)
        verdict = decide(
            lift,
            [dispute("dp_1", 1), cancel(3), lift],
            ended_by="dispute",
            decided_at=None,
            block_reason=None,
        )
        assert verdict.block is None
        assert verdict.license == {"ended_by": "canceled"}

    def test_an_older_payment_status_is_superseded(self) -> None:
        late = status("unpaid", 4)
        verdict = decide(late, [late], ended_by=None, decided_at=5, block_reason=None)
        assert (verdict.block, verdict.result) == (None, {"superseded_by": 5})

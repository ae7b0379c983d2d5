"""bridge.store.intents: claims, parking, outcomes and backoffs, on both databases."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, update

from bridge.core.intents import Status
from bridge.store import claims, creations, intents, wake
from bridge.store.errors import KeyHeld, NotReplayable
from bridge.store.tables import Intent, License, utcnow
from tests.fixtures.runs import add_intent, add_license, intent, license_row

REF = "crm:zoho:deal:D1"


def test_an_intent_without_its_key_is_parked_waiting(engine: Engine) -> None:
    add_intent(engine, "i1", "block", REF, {"reason": "crm_lost"}, 100)
    claimed = claims.claim(engine, "i1", "w1", 30)
    assert isinstance(claimed, claims.NotClaimed)
    assert (claimed.reason, claimed.retry_in) == ("waiting for the license key", None)
    assert intent(engine, "i1").status == "waiting"


def test_a_claim_leases_the_license_and_a_second_run_waits(engine: Engine) -> None:
    add_license(engine, REF, "KEY-1")
    add_intent(engine, "i1", "block", REF, {}, 100)
    add_intent(engine, "i2", "unblock", REF, {}, 101)
    first = claims.claim(engine, "i1", "w1", 30)
    assert isinstance(first, claims.Claimed) and first.license is not None
    assert first.license.key == "KEY-1"
    second = claims.claim(engine, "i2", "w2", 30)
    assert isinstance(second, claims.NotClaimed) and second.reason == "license busy"
    again = claims.claim(engine, "i1", "w3", 30)
    assert isinstance(again, claims.NotClaimed) and again.reason == "running elsewhere"


def test_finish_writes_status_and_license_facts_in_one_go(engine: Engine) -> None:
    add_license(engine, REF, "KEY-1")
    add_intent(engine, "i1", "set_customer", REF, {}, 100)
    claimed = claims.claim(engine, "i1", "w1", 30)
    assert isinstance(claimed, claims.Claimed)
    outcome = intents.Outcome(license={"customer_id": 7, "customer_decided_at": 100})
    assert intents.finish(engine, claimed, Status.DONE, outcome, result={"ok": 1}) == []
    row = license_row(engine, REF)
    assert (row.customer_id, row.customer_decided_at) == (7, 100)
    assert intent(engine, "i1").status == "done"
    # The lease is released: the next intent of the license is claimed at once.
    add_intent(engine, "i2", "set_customer", REF, {}, 101)
    assert isinstance(claims.claim(engine, "i2", "w2", 30), claims.Claimed)


def test_a_run_that_lost_its_intent_writes_nothing(engine: Engine) -> None:
    add_license(engine, REF, "KEY-1")
    add_intent(engine, "i1", "set_customer", REF, {}, 100)
    claimed = claims.claim(engine, "i1", "w1", 30)
    assert isinstance(claimed, claims.Claimed)
    intents.set_needs_review(engine, "i1", "a person took it")
    outcome = intents.Outcome(license={"customer_id": 7})
    assert intents.finish(engine, claimed, Status.DONE, outcome) is None
    assert license_row(engine, REF).customer_id is None
    assert intent(engine, "i1").status == "needs_review"


def test_a_backoff_is_measured_on_the_runtime_clock(engine: Engine) -> None:
    add_license(engine, REF, "KEY-1")
    add_intent(engine, "i1", "block", REF, {}, 100)
    claimed = claims.claim(engine, "i1", "w1", 30)
    assert isinstance(claimed, claims.Claimed)
    at = utcnow() + timedelta(days=1)  # the runtime's clock, a day ahead
    intents.reschedule(engine, claimed, intents.Outcome(), delay=60, error="x", count=True, at=at)
    early = claims.claim(engine, "i1", "w1", 30, at=at + timedelta(seconds=59))
    assert isinstance(early, claims.NotClaimed) and early.reason == "backing off"
    assert early.retry_in is not None and 0 < early.retry_in <= 1
    assert isinstance(
        claims.claim(engine, "i1", "w1", 30, at=at + timedelta(seconds=60)), claims.Claimed
    )
    assert intent(engine, "i1").attempts == 1


def test_a_new_key_wakes_the_waiting_intents_of_its_license(engine: Engine) -> None:
    add_intent(engine, "i1", "block", REF, {}, 100)
    assert isinstance(claims.claim(engine, "i1", "w1", 30), claims.NotClaimed)
    assert wake.wake_ready_waiting(engine) == []
    add_license(engine, REF, "KEY-1")
    assert wake.wake_ready_waiting(engine) == ["i1"]
    assert intent(engine, "i1").status == "pending"


def test_intents_that_never_get_a_key_do_not_hide_the_ready_ones(engine: Engine) -> None:
    for n in range(3):  # losses of deals never won: they wait for a key that never comes
        add_intent(engine, f"a-never-{n}", "block", f"crm:zoho:deal:N{n}", {}, 100)
        assert isinstance(claims.claim(engine, f"a-never-{n}", "w1", 30), claims.NotClaimed)
    add_intent(engine, "z-ready", "block", REF, {}, 100)
    assert isinstance(claims.claim(engine, "z-ready", "w1", 30), claims.NotClaimed)
    add_license(engine, REF, "KEY-1")
    assert wake.wake_ready_waiting(engine, limit=2) == ["z-ready"]


def test_a_stale_wake_never_runs_a_finished_intent_again(engine: Engine) -> None:
    """Read as waiting, then woken, run and finished by another transaction before this
    wake writes: the wake leaves it done (a second RegisterEvent otherwise, seen in the
    chaos run on PostgreSQL when the relay's wake raced a new key's)."""
    add_license(engine, REF, "KEY-1")
    add_intent(engine, "e1", "register_event", REF, {}, 100)
    with Session(engine) as s:
        s.execute(update(Intent).where(col(Intent.id) == "e1").values(status="done"))
        s.commit()
        assert wake._make_pending(s, ["e1"]) == []  # what the relay read a moment ago
        s.commit()
    assert intent(engine, "e1").status == "done"
    assert wake.wake_ready_waiting(engine) == []
    assert wake.wake_lease_free(engine, REF) == []


def test_a_key_creation_takes_over_the_stub_a_parked_event_left(engine: Engine) -> None:
    """An event of a license that has no row yet parks on a stub row; the key's creation
    (which may be inserting that row at the same moment, on PostgreSQL) keeps the row
    and fills it in, instead of failing on the unique ref."""
    add_intent(engine, "e1", "register_event", REF, {}, 100)
    parked = claims.claim(engine, "e1", "w1", 30)
    assert isinstance(parked, claims.NotClaimed) and parked.reason == "waiting for the license key"
    add_intent(engine, "c1", "create_key", REF, {}, 100)
    claimed = claims.claim(engine, "c1", "w2", 30)
    assert isinstance(claimed, claims.Claimed)
    step = creations.begin_create(
        engine,
        claimed,
        product_id=1001,
        template_id=1,
        scope="create:1001",
        lease=30,
        now=utcnow(),
    )
    assert step.attempt_id is not None
    row = license_row(engine, REF)
    assert (row.product_id, row.template_id, row.created_by) == (1001, 1, "c1")


def _set_status(engine: Engine, intent_id: str, status: Status) -> None:
    with Session(engine) as s:
        s.execute(
            update(Intent)
            .where(col(Intent.id) == intent_id)
            .values(status=status.value, attempts=3, last_error="x")
        )
        s.commit()


class TestReplay:
    def test_a_failed_intent_is_pending_again_with_no_attempts(self, engine: Engine) -> None:
        add_intent(engine, "i1", "block", REF, {}, 100)
        _set_status(engine, "i1", Status.FAILED)
        intents.replay(engine, "i1")
        row = intent(engine, "i1")
        assert (row.status, row.attempts, row.next_attempt_at) == ("pending", 0, None)

    def test_only_failed_or_needs_review_intents_are_replayed(self, engine: Engine) -> None:
        add_intent(engine, "i1", "block", REF, {}, 100)
        with pytest.raises(NotReplayable, match="only failed or needs_review"):
            intents.replay(engine, "i1")
        with pytest.raises(NotReplayable, match="no intent"):
            intents.replay(engine, "nope")

    def test_a_key_creation_in_review_needs_the_key_and_takes_no_held_one(
        self, engine: Engine
    ) -> None:
        add_license(engine, "other", "KEY-9")
        add_intent(engine, f"{REF}:create_key", "create_key", REF, {}, 100)
        _set_status(engine, f"{REF}:create_key", Status.NEEDS_REVIEW)
        with pytest.raises(NotReplayable, match="needs --key"):
            intents.replay(engine, f"{REF}:create_key")
        with pytest.raises(NotReplayable, match="no row yet"):
            intents.replay(engine, f"{REF}:create_key", key="KEY-1")
        with Session(engine) as s:
            s.add(License(ref=REF))
            s.commit()
        with pytest.raises(KeyHeld, match="license other's"):
            intents.replay(engine, f"{REF}:create_key", key="KEY-9")
        assert intent(engine, f"{REF}:create_key").status == "needs_review"
        intents.replay(engine, f"{REF}:create_key", key="KEY-1")
        assert license_row(engine, REF).key == "KEY-1"
        assert intent(engine, f"{REF}:create_key").status == "pending"

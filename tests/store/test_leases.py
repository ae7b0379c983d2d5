"""Database leases on SQLite and PostgreSQL, on a clock the test sets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine
from sqlmodel import Session

from bridge.store import leases
from bridge.store.tables import Intent

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class TestLease:
    def test_one_holder_at_a_time(self, engine: Engine) -> None:
        assert leases.acquire(engine, "license:a", "w1", 30, now=T0)
        assert not leases.acquire(engine, "license:a", "w2", 30, now=T0)
        assert leases.acquire(engine, "license:b", "w2", 30, now=T0)

    def test_holder_renews(self, engine: Engine) -> None:
        assert leases.acquire(engine, "x", "w1", 30, now=T0)
        assert leases.acquire(engine, "x", "w1", 30, now=at(20))
        # Renewed at 20 s: still the holder's at 40 s, past the first lease's end.
        assert not leases.acquire(engine, "x", "w2", 30, now=at(40))

    def test_release_frees_it_for_others(self, engine: Engine) -> None:
        assert leases.acquire(engine, "x", "w1", 30, now=T0)
        leases.release(engine, "x", "w1")
        assert leases.acquire(engine, "x", "w2", 30, now=T0)

    def test_release_by_another_owner_does_nothing(self, engine: Engine) -> None:
        assert leases.acquire(engine, "x", "w1", 30, now=T0)
        leases.release(engine, "x", "w2")
        assert not leases.acquire(engine, "x", "w2", 30, now=T0)

    def test_expired_lease_is_taken_over(self, engine: Engine) -> None:
        # A worker that died holding the lease blocks it only until it runs out.
        assert leases.acquire(engine, "x", "dead", 30, now=T0)
        assert not leases.acquire(engine, "x", "w2", 30, now=at(29))
        assert leases.acquire(engine, "x", "w2", 30, now=at(31))
        assert not leases.acquire(engine, "x", "dead", 30, now=at(31))


class TestRenewal:
    def test_renewal_extends_every_lease_of_the_run_from_now(self, engine: Engine) -> None:
        running_intent(engine, "i1", "run", T0)
        assert leases.acquire(engine, "license:a", "run", 30, now=T0)
        names = ["license:a"]
        assert leases.renew_leases(engine, "i1", "run", names, 30, now=at(25)) == []
        # Without the renewal the lease ran out at 30 s; renewed, it lasts until 55 s.
        assert not leases.acquire(engine, "license:a", "other", 30, now=at(40))
        assert leases.acquire(engine, "license:a", "other", 30, now=at(56))

    def test_a_lease_taken_over_is_reported_missing(self, engine: Engine) -> None:
        running_intent(engine, "i1", "run", T0)
        assert leases.acquire(engine, "license:a", "run", 30, now=T0)
        assert leases.acquire(engine, "license:a", "other", 30, now=at(31))
        names = ["license:a"]
        assert leases.renew_leases(engine, "i1", "run", names, 30, now=at(32)) == names

    def test_an_intent_no_longer_the_runs_is_lost(self, engine: Engine) -> None:
        running_intent(engine, "i1", "someone else", T0)
        assert leases.renew_leases(engine, "i1", "run", [], 30, now=at(1)) is None


def running_intent(engine: Engine, intent_id: str, owner: str, now: datetime) -> None:
    with Session(engine) as s:
        s.add(
            Intent(
                id=intent_id,
                effect="extend",
                license_ref="ref",
                params="{}",
                occurred_at=0,
                status="running",
                lease_owner=owner,
                lease_until=now + timedelta(seconds=30),
            )
        )
        s.commit()

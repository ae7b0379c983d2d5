"""Database leases on SQLite and PostgreSQL."""

from __future__ import annotations

import time

from sqlalchemy import Engine

from bridge.store import leases


class TestLease:
    def test_one_holder_at_a_time(self, engine: Engine) -> None:
        assert leases.acquire(engine, "license:a", "w1", 30)
        assert not leases.acquire(engine, "license:a", "w2", 30)
        assert leases.acquire(engine, "license:b", "w2", 30)

    def test_holder_renews(self, engine: Engine) -> None:
        assert leases.acquire(engine, "x", "w1", 30)
        assert leases.acquire(engine, "x", "w1", 30)

    def test_release_frees_it_for_others(self, engine: Engine) -> None:
        assert leases.acquire(engine, "x", "w1", 30)
        leases.release(engine, "x", "w1")
        assert leases.acquire(engine, "x", "w2", 30)

    def test_release_by_another_owner_does_nothing(self, engine: Engine) -> None:
        assert leases.acquire(engine, "x", "w1", 30)
        leases.release(engine, "x", "w2")
        assert not leases.acquire(engine, "x", "w2", 30)

    def test_expired_lease_is_taken_over(self, engine: Engine) -> None:
        # A worker that died holding the lease blocks it only until it runs out.
        assert leases.acquire(engine, "x", "dead", 0.05)
        time.sleep(0.1)
        assert leases.acquire(engine, "x", "w2", 30)
        assert not leases.acquire(engine, "x", "dead", 30)

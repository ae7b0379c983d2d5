"""A run's leases (jobs/lease.py): kept while the run is alive, however slow Cryptolens;
once lost, not one more mutating call. On SQLite and PostgreSQL, the sandbox over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from arq.connections import ArqRedis
from pydantic import ValidationError
from sqlalchemy import Engine, update
from sqlmodel import Session, col

from bridge.core.settings import Settings
from bridge.cryptolens.models import LicenseKey
from bridge.store.leases import license_lock
from bridge.store.tables import Intent, Lock, utcnow
from jobs.relay import relay_once
from jobs.runner import run_intent
from jobs.runtime import Runtime
from tests.fixtures.clock import ManualClock
from tests.fixtures.pipeline import make_settings
from tests.fixtures.runs import (
    DAY,
    add_intent,
    add_license,
    attempts,
    expires_of,
    intent,
    license_row,
    runtime,
    sandbox_key,
    step,
)
from tests.fixtures.servers import SandboxServer

REF = "stripe:sub:sub_lease"
GetKey = Callable[[int, str], Awaitable[LicenseKey]]


def _now() -> int:
    return int(utcnow().timestamp())


def extension(engine: Engine, target: int, ref: str = REF) -> str:
    params = {"expires_at": target, "invoice": None, "period_end": target}
    return add_intent(engine, f"{ref}:expires:{target}", "extend", ref, params, _now())


def after_get_key(rt: Runtime, then: Callable[[], Awaitable[None]]) -> None:
    """Make ``then`` happen right after the run's next GetKey reply (between its read
    and the mutating call it decides on)."""
    real: GetKey = rt.client.get_key
    done = False

    async def get_key(product_id: int, key: str) -> LicenseKey:
        nonlocal done
        found = await real(product_id, key)
        if not done:
            done = True
            await then()
        return found

    rt.client.get_key = get_key  # type: ignore[method-assign]


class TestLostLease:
    @pytest.mark.parametrize("taken", ["intent", "license"])
    async def test_a_run_whose_lease_was_taken_over_sends_nothing_more(
        self,
        bridge_settings: Settings,
        engine: Engine,
        sandbox_server: SandboxServer,
        taken: str,
    ) -> None:
        """The run froze past its lease and another worker took the intent (or the
        license) over: the run must not send the ExtendLicense it had decided on."""
        key, start = sandbox_key(sandbox_server)
        add_license(engine, REF, key)
        target = start + 10 * DAY
        a = extension(engine, target)

        async def taken_over() -> None:
            with Session(engine) as s:
                if taken == "intent":
                    s.execute(
                        update(Intent)
                        .where(col(Intent.id) == a)
                        .values(lease_owner="another-worker:1", lease_until=utcnow())
                    )
                s.commit()
            if taken == "license":
                # The license lease ran out and another run took it.
                with Session(engine) as s:
                    s.execute(
                        update(Lock)
                        .where(col(Lock.name) == license_lock(REF))
                        .values(owner="another-worker:1:run")
                    )
                    s.commit()

        async with runtime(bridge_settings, engine) as rt:
            after_get_key(rt, taken_over)
            assert await step(rt, a) == "lease_lost"
        calls = sandbox_server.state()["calls"]
        assert "key/ExtendLicense" not in calls or calls["key/ExtendLicense"]["received"] == 0
        assert expires_of(sandbox_server, key) == start
        assert attempts(engine, a) == []
        assert intent(engine, a).status == "running"  # the other worker's, untouched

    async def test_settings_refuse_a_lease_shorter_than_two_calls(self, tmp_path: Path) -> None:
        def settings(lease: float) -> Settings:
            return make_settings(
                database_url="sqlite://",
                redis_url="redis://127.0.0.1:1/0",
                sandbox_url="http://127.0.0.1:1/api/",
                config_path=tmp_path / "bridge.toml",
                CRYPTOLENS_CONNECT_TIMEOUT=1.0,
                CRYPTOLENS_READ_TIMEOUT=3.0,
                BRIDGE_LEASE_SECONDS=lease,
            )

        with pytest.raises(ValidationError, match=r"BRIDGE_LEASE_SECONDS=9\.9 is shorter"):
            settings(9.9)  # 2 x (1 + 3 + 1) = 10
        assert settings(10.0).lease_seconds == 10.0


async def frozen(_: float) -> None:
    """A sleep that never ends: a process frozen mid-run."""
    await asyncio.Event().wait()


class TestSlowCryptolens:
    async def test_the_heartbeat_keeps_a_slow_run_its_intent(
        self, bridge_settings: Settings, engine: Engine, sandbox_server: SandboxServer
    ) -> None:
        """The run is held up between its read and its extension for two leases' time
        (on the runtime's clock). A second worker trying the intent after every beat
        must never get it (it would read the old expiry and extend a second time)."""
        key, start = sandbox_key(sandbox_server)
        add_license(engine, REF, key)
        target = start + 34 * DAY
        a = extension(engine, target)
        held, let_go = asyncio.Event(), asyncio.Event()
        clock = ManualClock(utcnow())
        seconds = bridge_settings.lease_seconds

        async def hold_up() -> None:
            held.set()
            await let_go.wait()

        async with (
            runtime(bridge_settings, engine) as one,
            runtime(bridge_settings, engine) as two,
        ):
            for rt in (one, two):
                rt.clock, rt.sleep = clock, clock.sleep
            after_get_key(one, hold_up)
            first = asyncio.create_task(step(one, a))
            await held.wait()  # the first worker has the intent and has read the key
            await clock.sleeping()  # its heartbeat waits for the first beat
            tries: list[str] = []
            for _ in range(6):  # two leases, a beat (a third of one) at a time
                clock.advance(seconds / 3)
                await clock.sleeping()  # the beat renewed, and waits for the next
                tries.append(await step(two, a))
            let_go.set()
            assert await first == "done"
            assert await step(two, a) == "intent is done"

        assert set(tries) == {"retry"}  # "running elsewhere", every time
        assert sandbox_server.state()["counts"]["extensions"] == 1
        assert expires_of(sandbox_server, key) == target

    async def test_a_run_that_stops_beating_loses_its_intent(
        self, bridge_settings: Settings, engine: Engine, sandbox_server: SandboxServer
    ) -> None:
        """A run whose heartbeat never comes (its process froze) loses the intent once
        a lease has passed: another worker takes it over, and the frozen run, woken,
        sends nothing."""
        key, start = sandbox_key(sandbox_server)
        add_license(engine, REF, key)
        target = start + 34 * DAY
        a = extension(engine, target)
        held, let_go = asyncio.Event(), asyncio.Event()
        clock = ManualClock(utcnow())

        async def hold_up() -> None:
            held.set()
            await let_go.wait()

        async with (
            runtime(bridge_settings, engine) as one,
            runtime(bridge_settings, engine) as two,
        ):
            one.clock, two.clock = clock, clock
            one.sleep = frozen  # its heartbeat never comes
            after_get_key(one, hold_up)
            first = asyncio.create_task(step(one, a))
            await held.wait()
            assert await step(two, a) == "retry"  # still the first run's
            clock.advance(bridge_settings.lease_seconds + 1)
            assert await step(two, a) == "done"
            let_go.set()
            assert await first == "lease_lost"

        assert sandbox_server.state()["counts"]["extensions"] == 1
        assert expires_of(sandbox_server, key) == target


class TestWokenIntents:
    async def test_a_woken_intent_running_inline_is_not_run_again_meanwhile(
        self,
        bridge_settings: Settings,
        engine: Engine,
        sandbox_server: SandboxServer,
        redis: ArqRedis,
    ) -> None:
        """A new key wakes the renewal that came first, and the creating job runs it
        inline. Meanwhile the relay and another worker find it running: neither runs it."""
        ref = "stripe:sub:sub_woken"
        create = add_intent(
            engine, f"{ref}:create_key", "create_key", ref, {"template_id": 1}, _now()
        )
        target = _now() + 40 * DAY
        renewal = extension(engine, target, ref)
        with Session(engine) as s:
            s.execute(update(Intent).where(col(Intent.id) == renewal).values(status="waiting"))
            s.commit()

        seen: dict[str, Any] = {}
        async with (
            runtime(bridge_settings, engine) as rt,
            runtime(bridge_settings, engine) as other,
        ):
            other.redis = redis

            async def meanwhile() -> None:
                seen["status"] = intent(engine, renewal).status
                seen["relayed"] = await relay_once(other)
                seen["other worker"] = await step(other, renewal)

            after_get_key(rt, meanwhile)  # the renewal's read: create_key reads no key
            assert await run_intent({"runtime": rt}, create) == "done"

        assert seen == {"status": "running", "relayed": 0, "other worker": "retry"}
        assert intent(engine, renewal).status == "done"
        assert sandbox_server.state()["counts"]["extensions"] == 1
        key = license_row(engine, ref).key
        assert key is not None
        assert target <= expires_of(sandbox_server, key) < target + DAY

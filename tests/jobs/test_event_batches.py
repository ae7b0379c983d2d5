"""Events of one key due together: one RegisterEvents call, each event exactly once.

The argument is the REGISTER_EVENT bullet of the jobs.effects package docstring; these
tests drive it against the sandbox over HTTP, on SQLite and PostgreSQL, one job at a
time (tests/fixtures/runs.py) so each interleaving is the one named.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from sqlalchemy import Engine

from bridge.core.settings import Settings
from bridge.store.tables import utcnow
from tests.fixtures.runs import (
    PRODUCT,
    add_intent,
    add_license,
    attempts,
    due_now,
    finish,
    intent,
    later,
    runtime,
    sandbox_key,
    step,
)
from tests.fixtures.servers import SandboxServer

REF = "stripe:sub:sub_events"


def event(engine: Engine, name: str, ref: str = REF) -> str:
    params = {"event_name": "renewal", "value": 2000, "currency": "USD", "metadata": {"n": name}}
    at = int(utcnow().timestamp())
    return add_intent(engine, f"{REF}:event:renewal:{name}", "register_event", ref, params, at)


def registered(sandbox: SandboxServer, key: str) -> list[str]:
    """The intent id in each event the sandbox holds for the key, sorted."""
    body = sandbox.call("ai/GetEvents", ProductId=PRODUCT, Key=key, Limit=100)
    return sorted(json.loads(e["metadata"])["intent"] for e in body["events"])


def received(sandbox: SandboxServer, method: str) -> int:
    calls: dict[str, Any] = sandbox.state()["calls"]
    return int(calls.get(method, {}).get("received", 0))


class TestOneCall:
    async def test_due_events_of_a_key_go_in_one_register_events_call(
        self, bridge_settings: Settings, engine: Engine, sandbox_server: SandboxServer
    ) -> None:
        key, _ = sandbox_key(sandbox_server)
        add_license(engine, REF, key)
        ids = [event(engine, name) for name in ("a", "b", "c")]
        async with runtime(bridge_settings, engine) as rt:
            assert await step(rt, ids[0]) == "done"
            # The others were its companions: ended with it, their own jobs find them done.
            assert [await step(rt, i) for i in ids[1:]] == ["intent is done"] * 2
        assert registered(sandbox_server, key) == sorted(ids)
        assert (
            received(sandbox_server, "ai/RegisterEvents"),
            received(sandbox_server, "ai/RegisterEvent"),
        ) == (1, 0)
        for i in ids:
            assert attempts(engine, i) == [("ai/RegisterEvents", "applied")]
            assert intent(engine, i).status == "done"
        assert json.loads(intent(engine, ids[1]).result or "{}") == {
            "registered": True,
            "with": ids[0],
        }

    async def test_an_event_under_an_alias_of_the_license_joins_the_call(
        self, bridge_settings: Settings, engine: Engine, sandbox_server: SandboxServer
    ) -> None:
        from sqlmodel import Session

        from bridge.store.tables import LicenseAlias

        key, _ = sandbox_key(sandbox_server)
        add_license(engine, REF, key)
        with Session(engine) as s:
            s.add(LicenseAlias(alias="stripe:pi:pi_events", ref=REF))
            s.commit()
        a, b = event(engine, "a"), event(engine, "b", ref="stripe:pi:pi_events")
        async with runtime(bridge_settings, engine) as rt:
            assert await step(rt, b) == "done"
        assert registered(sandbox_server, key) == sorted([a, b])
        assert received(sandbox_server, "ai/RegisterEvents") == 1

    async def test_a_backed_off_event_is_not_taken_before_it_is_due(
        self, bridge_settings: Settings, engine: Engine, sandbox_server: SandboxServer
    ) -> None:
        from datetime import timedelta

        from sqlalchemy import update
        from sqlmodel import Session, col

        from bridge.store.tables import Intent

        key, _ = sandbox_key(sandbox_server)
        add_license(engine, REF, key)
        a, b = event(engine, "a"), event(engine, "b")
        with Session(engine) as s:
            s.execute(
                update(Intent)
                .where(col(Intent.id) == b)
                .values(next_attempt_at=utcnow() + timedelta(hours=1))
            )
            s.commit()
        async with runtime(bridge_settings, engine) as rt:
            assert await step(rt, a) == "done"
        assert registered(sandbox_server, key) == [a]
        assert intent(engine, b).status == "pending"
        assert received(sandbox_server, "ai/RegisterEvent") == 1


class TestRaces:
    async def test_two_events_racing_on_two_workers_are_each_registered_once(
        self, bridge_settings: Settings, engine: Engine, sandbox_server: SandboxServer
    ) -> None:
        """Whichever claim comes first takes the other as its companion, or each runs
        alone: never both in two calls."""
        key, _ = sandbox_key(sandbox_server)
        add_license(engine, REF, key)
        a, b = event(engine, "a"), event(engine, "b")
        async with (
            runtime(bridge_settings, engine) as one,
            runtime(bridge_settings, engine) as two,
        ):
            first, second = await asyncio.gather(finish(one, a), finish(two, b))
        # "intent is done": its job ran after it had ended as the other's companion.
        assert set({**first, **second}.values()) <= {"done", "intent is done"}
        assert {intent(engine, i).status for i in (a, b)} == {"done"}
        assert registered(sandbox_server, key) == sorted([a, b])
        batched = received(sandbox_server, "ai/RegisterEvents")
        alone = received(sandbox_server, "ai/RegisterEvent")
        assert (batched, alone) in ((1, 0), (0, 2))
        outcomes = [o for i in (a, b) for _, o in attempts(engine, i)]
        assert outcomes == ["applied", "applied"]

    async def test_a_lost_reply_of_the_batch_is_read_back_per_intent(
        self, bridge_settings: Settings, engine: Engine, sandbox_server: SandboxServer
    ) -> None:
        """The call landed, its reply was lost: each intent, in its own run, finds its
        own event by its exact Metadata and sends nothing."""
        key, _ = sandbox_key(sandbox_server)
        add_license(engine, REF, key)
        a, b, c = (event(engine, name) for name in ("a", "b", "c"))
        sandbox_server.set_faults(script=[{"method": "ai/RegisterEvents", "fault": "lost_reply"}])
        async with (
            runtime(bridge_settings, engine) as one,
            runtime(bridge_settings, engine) as two,
        ):
            assert await step(one, a) == "retry"
            for i in (a, b, c):
                assert attempts(engine, i) == [("ai/RegisterEvents", "unknown")]
                assert intent(engine, i).status == "pending"
            first, second = await asyncio.gather(finish(one, a, b), finish(two, c))
        assert {**first, **second} == {a: "done", b: "done", c: "done"}
        assert received(sandbox_server, "ai/GetEvents") == 3  # one read-back per intent
        assert received(sandbox_server, "ai/RegisterEvents") == 1
        assert received(sandbox_server, "ai/RegisterEvent") == 0
        assert registered(sandbox_server, key) == sorted([a, b, c])
        for i in (a, b, c):
            assert attempts(engine, i) == [("ai/RegisterEvents", "applied")]
            assert json.loads(intent(engine, i).result or "{}")["recovered"] is True

    async def test_a_lost_batch_that_never_landed_is_sent_again_once_per_intent(
        self, bridge_settings: Settings, engine: Engine, sandbox_server: SandboxServer
    ) -> None:
        key, _ = sandbox_key(sandbox_server)
        add_license(engine, REF, key)
        a, b = event(engine, "a"), event(engine, "b")
        sandbox_server.set_faults(script=[{"method": "ai/RegisterEvents", "fault": "lost_request"}])
        async with runtime(bridge_settings, engine) as rt:
            assert await step(rt, a) == "retry"
            due_now(engine, a, b)
            # Nothing found yet, but the call may still land: neither is sent again.
            assert await step(rt, b) == "retry"
            assert received(sandbox_server, "ai/RegisterEvent") == 0
            rt.clock = later(bridge_settings.call_bound_seconds + 1)  # past settle_after
            assert await finish(rt, a, b) == {a: "done", b: "done"}
        assert registered(sandbox_server, key) == sorted([a, b])
        for i in (a, b):
            assert attempts(engine, i) == [
                ("ai/RegisterEvents", "not_applied"),
                ("ai/RegisterEvent", "applied"),
            ]

    async def test_a_refused_batch_is_split_and_only_the_bad_event_fails(
        self, bridge_settings: Settings, engine: Engine, sandbox_server: SandboxServer
    ) -> None:
        """Issue 15, 4 (confirmed): Cryptolens refuses a RegisterEvents call whole when one
        event is bad (an event name over 100 characters), naming none; the old code failed
        every companion with it. Each is now sent again alone."""
        key, _ = sandbox_key(sandbox_server)
        add_license(engine, REF, key)
        a, c = event(engine, "a"), event(engine, "c")
        params = {"event_name": "x" * 101, "value": 2000, "currency": "USD", "metadata": {}}
        at = int(utcnow().timestamp())
        bad = add_intent(engine, f"{REF}:event:renewal:bad", "register_event", REF, params, at)
        async with runtime(bridge_settings, engine) as rt:
            assert await step(rt, a) == "retry"  # refused: back to pending, one by one
            for i in (a, bad, c):
                assert intent(engine, i).status == "pending"
                assert attempts(engine, i) == [("ai/RegisterEvents", "refused")]
            assert await finish(rt, a, bad, c) == {a: "done", bad: "failed", c: "done"}
        assert registered(sandbox_server, key) == sorted([a, c])
        assert received(sandbox_server, "ai/RegisterEvents") == 1
        assert "input" in (intent(engine, bad).last_error or "").lower()
        for i in (a, c):
            assert attempts(engine, i) == [
                ("ai/RegisterEvents", "refused"),
                ("ai/RegisterEvent", "applied"),
            ]
            assert intent(engine, i).attempts == 1  # the refused batch is not counted
        assert attempts(engine, bad)[-1] == ("ai/RegisterEvent", "refused")

    async def test_a_batch_refused_for_every_event_fails_each_alone(
        self, bridge_settings: Settings, engine: Engine, sandbox_server: SandboxServer
    ) -> None:
        add_license(engine, REF, "NO-SUCH-KEY")  # Cryptolens: "Could not find the key."
        a, b = event(engine, "a"), event(engine, "b")
        async with runtime(bridge_settings, engine) as rt:
            assert await step(rt, a) == "retry"
            assert await finish(rt, a, b) == {a: "failed", b: "failed"}
        for i in (a, b):
            row = intent(engine, i)
            assert "key" in (row.last_error or "").lower()
            assert attempts(engine, i) == [
                ("ai/RegisterEvents", "refused"),
                ("ai/RegisterEvent", "refused"),
            ]

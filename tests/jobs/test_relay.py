"""jobs.relay: what the database says is unfinished is queued again, once."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from arq.connections import ArqRedis
from sqlalchemy import Engine

from bridge.core.queue import connect
from bridge.core.settings import Settings
from bridge.store import claims
from jobs.relay import relay_once
from jobs.runtime import Runtime
from tests.fixtures.runs import add_intent, add_license, intent, runtime


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[ArqRedis]:
    client = connect(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


async def queued(redis: ArqRedis) -> list[str]:
    return sorted(job.job_id or "" for job in await redis.queued_jobs())


async def test_pending_and_ready_waiting_intents_are_queued_once(
    bridge_settings: Settings, engine: Engine, redis: ArqRedis
) -> None:
    add_intent(engine, "pending-1", "block", "crm:a:deal:1", {}, 1)
    add_intent(engine, "waits", "block", "crm:a:deal:2", {}, 1)
    assert isinstance(claims.claim(engine, "waits", "w", 30), claims.NotClaimed)  # parked
    add_intent(engine, "waits-on-nothing", "block", "crm:a:deal:3", {}, 1)
    assert isinstance(claims.claim(engine, "waits-on-nothing", "w", 30), claims.NotClaimed)
    add_license(engine, "crm:a:deal:2", "KEY-2")

    async with runtime(bridge_settings, engine) as rt:
        rt.redis = redis
        assert await relay_once(rt) == 2
        assert await queued(redis) == ["pending-1", "waits"]
        assert await relay_once(rt) == 0  # already queued: not twice
    assert intent(engine, "waits").status == "pending"
    assert intent(engine, "waits-on-nothing").status == "waiting"


async def test_without_redis_the_relay_does_nothing(
    bridge_settings: Settings, engine: Engine
) -> None:
    async with runtime(bridge_settings, engine) as rt:
        assert isinstance(rt, Runtime) and rt.redis is None
        assert await relay_once(rt) == 0

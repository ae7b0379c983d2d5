"""Enqueueing: arq's jobs, one per intent, whichever way the web or the worker sends them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from arq.connections import ArqRedis
from arq.jobs import Job
from redis.exceptions import ConnectionError as RedisConnectionError

from bridge.core.queue import JOB_NAME, Enqueuer, enqueue


@pytest.fixture
async def enqueuer(redis_url: str) -> AsyncIterator[Enqueuer]:
    queue = Enqueuer(redis_url)
    yield queue
    await queue.aclose()


async def job_of(redis: ArqRedis, job_id: str) -> tuple[str, tuple[object, ...]]:
    info = await Job(job_id, redis).info()
    assert info is not None
    return info.function, info.args


class TestEnqueuer:
    async def test_queues_the_same_jobs_as_enqueue(
        self, enqueuer: Enqueuer, redis: ArqRedis
    ) -> None:
        assert await enqueuer.enqueue(["i1", "i2", "i1"]) == 2
        assert await enqueue(redis, ["i3"]) == 1
        queued = await redis.zrange(redis.default_queue_name, 0, -1)
        assert sorted(queued) == [b"i1", b"i2", b"i3"]
        for job_id in ("i1", "i2", "i3"):
            assert await job_of(redis, job_id) == (JOB_NAME, (job_id,))

    async def test_a_queued_intent_is_not_queued_again(
        self, enqueuer: Enqueuer, redis: ArqRedis
    ) -> None:
        assert await enqueue(redis, ["i1"]) == 1
        assert await enqueuer.enqueue(["i1", "i2"]) == 1
        assert await enqueuer.enqueue([]) == 0

    async def test_a_server_that_lost_its_scripts_still_queues(
        self, enqueuer: Enqueuer, redis: ArqRedis
    ) -> None:
        await enqueuer.enqueue(["i1"])
        await redis.script_flush()
        assert await enqueuer.enqueue(["i2"]) == 1
        await redis.script_flush()
        assert await enqueue(redis, ["i3"]) == 1

    async def test_no_server_is_a_connection_error(self) -> None:
        queue = Enqueuer("redis://127.0.0.1:1/0")  # nothing listens on port 1
        try:
            with pytest.raises(RedisConnectionError):
                await queue.enqueue(["i1"])
        finally:
            await queue.aclose()

    async def test_a_dropped_connection_is_opened_again(
        self, enqueuer: Enqueuer, redis: ArqRedis
    ) -> None:
        await enqueuer.enqueue(["i1"])
        await redis.client_kill_filter(_type="normal", skipme=True)
        # The first call may find the connection closed under it; the next one reconnects.
        try:
            await enqueuer.enqueue(["i2"])
        except RedisConnectionError:
            await enqueuer.enqueue(["i2"])
        assert sorted(await redis.zrange(redis.default_queue_name, 0, -1)) == [b"i1", b"i2"]


class TestNudge:
    async def test_brings_a_deferred_job_forward_and_only_that(
        self, enqueuer: Enqueuer, redis: ArqRedis
    ) -> None:
        await enqueue(redis, ["waiting", "other"], defer=60)
        before = dict(await redis.zrange(redis.default_queue_name, 0, -1, withscores=True))
        await enqueuer.nudge(["waiting", "not-queued"])
        after = dict(await redis.zrange(redis.default_queue_name, 0, -1, withscores=True))
        assert after[b"waiting"] < before[b"waiting"] - 50_000  # now, not in a minute
        assert after[b"other"] == before[b"other"]
        assert b"not-queued" not in after  # XX: a job that is gone is not made up

    async def test_never_pushes_a_job_back(self, enqueuer: Enqueuer, redis: ArqRedis) -> None:
        await enqueue(redis, ["due"], defer=0)
        before = await redis.zscore(redis.default_queue_name, "due")
        await enqueuer.nudge(["due"])
        assert await redis.zscore(redis.default_queue_name, "due") == before  # LT

"""``jobs.worker.BridgeWorker``: what it adds to arq's worker for a Redis outage, one
piece at a time, against a redis-server child of the test's own (the whole outage, with a
worker process and purchases arriving, is in tests/scenarios/test_resilience.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from arq.connections import ArqRedis, RedisSettings
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import WatchError

from bridge.core.outage import RedisOutage, redis_down
from jobs.worker import BridgeWorker
from tests.fixtures.stack import RedisServer, free_port
from tests.fixtures.waiting import until


async def _nothing(ctx: dict[str, Any]) -> None:
    return None


def _worker(port: int, **options: Any) -> BridgeWorker:
    settings = RedisSettings(host="127.0.0.1", port=port, conn_retries=0, conn_timeout=1)
    return BridgeWorker(
        functions=[_nothing],
        redis_settings=settings,
        handle_signals=False,
        poll_delay=0.01,
        **options,
    )


async def test_a_job_whose_start_meets_redis_down_gives_its_slot_back() -> None:
    worker = _worker(free_port(), max_jobs=2)
    worker._pool = ArqRedis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1)
    try:
        for _ in range(3):  # more failures than slots: none may be kept
            try:
                await worker.start_jobs([b"some-intent"])
            except RedisConnectionError:
                pass
            else:
                raise AssertionError("no Redis: the start must fail")
        assert worker.job_counter == 0
        assert worker.sem._value == 3  # max_jobs + 1, as arq made it
    finally:
        await worker._pool.aclose()
        worker._pool = None


async def test_redis_away_at_start_up_is_waited_for_then_the_worker_starts() -> None:
    server = RedisServer()
    started: list[dict[str, Any]] = []

    async def on_startup(ctx: dict[str, Any]) -> None:
        started.append(ctx)

    outage = RedisOutage("worker")
    worker = _worker(server.port, on_startup=on_startup, outage=outage)
    main = asyncio.create_task(worker.main())
    try:
        await until(lambda: outage.down)
        assert not started and not main.done()
        server.start()
        await until(lambda: bool(started))
        assert not outage.down and not main.done()
    finally:
        main.cancel()
        await asyncio.gather(main, return_exceptions=True)
        await worker.close()
        server.stop()


async def test_a_shutdown_with_redis_away_still_runs_on_shutdown() -> None:
    server = RedisServer()
    server.start()
    closed: list[bool] = []

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        closed.append(True)

    worker = _worker(server.port, on_shutdown=on_shutdown)
    main = asyncio.create_task(worker.main())
    try:
        await until(lambda: worker._pool is not None and worker.ctx.get("redis") is not None)
        server.kill()
        await until(lambda: worker.outage.down)
    finally:
        main.cancel()
        await asyncio.gather(main, return_exceptions=True)
        await worker.close()  # arq's own close would raise on its health-check key
        server.stop()
    assert closed == [True]
    assert worker._pool is None


def test_a_watch_lost_with_its_connection_is_an_outage_and_a_contended_one_is_not() -> None:
    try:
        try:
            raise RedisConnectionError("Connection closed by server.")
        except RedisConnectionError:
            raise WatchError("A ConnectionError occurred on while watching") from None
    except WatchError as lost:
        # ``from None`` hides the cause from tracebacks but keeps it as the context.
        assert redis_down(lost)
    assert not redis_down(WatchError("Watched variable changed."))
    assert redis_down(RedisConnectionError("refused"))
    assert not redis_down(ValueError("bad job"))

"""Usage billed exactly once through duplicates, concurrency, a killed worker and a
Redis restart: the sinks' totals add up to the ledger exactly.

Starts its own worker process and its own ``redis-server``, as tests/scenarios/test_resilience.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from bridge.app import create_app
from bridge.core.settings import Settings
from bridge.store.dbapi import aware
from bridge.store.tables import Attempt, Intent, utcnow
from tests.fixtures.fake_stripe import API_KEY, FakeStripe
from tests.fixtures.pipeline import Clock
from tests.fixtures.servers import SandboxServer, run_asgi
from tests.fixtures.stack import RedisServer
from tests.fixtures.usage import (
    CRYPTOLENS_PRODUCT,
    METER_PRODUCT,
    T0,
    UsageBridge,
    add_license,
    record,
    recorded_usage,
    sandbox_key,
    usage_settings,
)
from tests.fixtures.waiting import until

pytestmark = pytest.mark.slow


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()


def _worker(settings: Settings, cwd: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "STRIPE_"))}
    env.update(
        BRIDGE_DATABASE_URL=settings.database_url,
        BRIDGE_REDIS_URL=settings.redis_url,
        BRIDGE_CONFIG=str(settings.config_path),
        CRYPTOLENS_API_URL=settings.cryptolens_api_url,
        CRYPTOLENS_TOKEN=settings.cryptolens_token.get_secret_value(),
        CRYPTOLENS_CONNECT_TIMEOUT="0.5",
        CRYPTOLENS_READ_TIMEOUT="3",
        BRIDGE_LEASE_SECONDS="9",
        BRIDGE_SETTLE_SECONDS="0",
        BRIDGE_RETRY_BASE_SECONDS="0.05",
        BRIDGE_RETRY_CAP_SECONDS="0.5",
        BRIDGE_LOG_LEVEL="WARNING",
        STRIPE_API_KEY=API_KEY,
        STRIPE_API_BASE=str(settings.stripe_api_base),
    )
    return subprocess.Popen(
        [sys.executable, "-m", "bridge", "worker"],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _batch(keys: list[tuple[int, str]], start: int, count: int) -> list[dict[str, Any]]:
    return [
        record(n, key=keys[n % len(keys)][1], product_id=keys[n % len(keys)][0], quantity=n % 7 + 1)
        for n in range(start, start + count)
    ]


def _leases_expired(engine: Engine) -> bool:
    with Session(engine) as s:
        running = s.exec(select(Intent).where(col(Intent.status) == "running")).all()
    now = utcnow()
    return all(i.lease_until is None or aware(i.lease_until) < now for i in running)


def _short_timeout_functions() -> list[Any]:
    from arq.worker import func

    from bridge.core.queue import JOB_NAME
    from jobs.runner import run_intent

    return [func(run_intent, name=JOB_NAME, max_tries=1_000_000, timeout=5)]


async def test_each_unit_is_billed_once_through_duplicates_a_killed_worker_and_redis_restart(
    private_redis: RedisServer,
    database_url: str,
    engine: Engine,
    sandbox_server: SandboxServer,
    fake_stripe: FakeStripe,
    tmp_path: Path,
) -> None:
    settings = usage_settings(
        database_url=database_url,
        redis_url=private_redis.url,
        sandbox_url=sandbox_server.url,
        tmp_path=tmp_path,
        STRIPE_API_KEY=API_KEY,
        STRIPE_API_BASE=fake_stripe.url,
    )
    clock = Clock()
    clock.at = T0
    keys = [(CRYPTOLENS_PRODUCT, sandbox_key(sandbox_server)) for _ in range(3)]
    for n in range(2):
        key = f"METER-RESILIENCE-{n}"
        add_license(engine, f"stripe:sub:sub_res_{n}", METER_PRODUCT, key)
        fake_stripe.subscriptions[f"sub_res_{n}"] = f"cus_res_{n}"
        keys.append((METER_PRODUCT, key))

    with run_asgi(create_app(settings, engine=engine, clock=clock)) as url:
        bridge = UsageBridge(settings, engine, url, sandbox_server, clock=clock)
        try:
            # Every batch posted twice at once, and once more later.
            first = _batch(keys, 0, 400)
            await asyncio.gather(bridge.usage(first), bridge.usage(first))
            clock.at = T0 + 60
            second = _batch(keys, 400, 400)
            await asyncio.gather(bridge.usage(second), bridge.usage(first + second))

            # A worker that dies mid-call: the sandbox applies each call and answers late.
            sandbox_server.set_faults(reply_delay_ms=400)
            worker = _worker(settings, tmp_path)
            try:
                await until(
                    lambda: bool(recorded_usage(sandbox_server)) and fake_stripe.received > 0,
                    timeout=30,
                )
            finally:
                worker.send_signal(signal.SIGKILL)
                _, stderr = worker.communicate(timeout=10)
            assert worker.returncode == -signal.SIGKILL, stderr.decode()[-2000:]

            # Redis goes away (and comes back empty) while usage keeps arriving.
            private_redis.stop()
            clock.at = T0 + 120
            third = _batch(keys, 800, 200)
            responses = await asyncio.gather(bridge.usage(third), bridge.usage(third))
            assert [r.status_code for r in responses] == [202, 202]
            private_redis.start()
            await bridge.usage(second + third)

            sandbox_server.set_faults(reply_delay_ms=0)
            await bridge.drain(functions=_short_timeout_functions())
            # The dead worker's run is retaken once its lease (9 s) runs out: its job was
            # lost with Redis, so it is the relay (at the next worker's start) that queues it.
            await until(lambda: _leases_expired(engine), timeout=30)
            await bridge.drain(functions=_short_timeout_functions())
        finally:
            await bridge.http.aclose()

    quantities = [r["quantity"] for r in first + second + third]
    assert bridge.ledger_total() == sum(quantities)
    cryptolens = sum(recorded_usage(sandbox_server).values())
    assert cryptolens == bridge.ledger_total(CRYPTOLENS_PRODUCT)
    assert fake_stripe.total() == bridge.ledger_total(METER_PRODUCT)
    intents = bridge.usage_intents()
    assert len(intents) == 5 * 3  # five keys, three windows
    # A RecordUsage in flight when the worker died cannot be read back: a person decides
    # (it was applied: the sandbox answers after applying). Nothing else is left over.
    for intent in intents.values():
        if intent.status == "needs_review":
            with Session(engine) as s:
                outcomes = s.exec(
                    select(Attempt.outcome).where(col(Attempt.intent_id) == intent.id)
                ).all()
            assert outcomes == [None], (intent.id, outcomes)
            assert intent.id.startswith(f"usage:{CRYPTOLENS_PRODUCT}:")
        else:
            assert intent.status == "done", (intent.id, intent.status, intent.last_error)

"""Crashes and outages: a worker killed mid-job, Redis stopped while webhooks arrive.

These tests start their own processes and their own ``redis-server``; they never stop
the machine's shared servers.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from bridge.app import create_app
from bridge.core.settings import Settings
from tests.fixtures import stripe_builders as sb
from tests.fixtures.pipeline import CONFIG, Pipeline, make_settings
from tests.fixtures.servers import SandboxServer, run_asgi
from tests.fixtures.stack import RedisServer


def one_off(n: int) -> dict[str, Any]:
    event = sb.checkout_session(payment_intent=f"pi_resilience_{n:03d}")
    event["id"] = f"evt_resilience_{n:03d}"
    sb.obj(event)["id"] = f"cs_resilience_{n:03d}"
    return event


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()


class TestRedisOutage:
    async def test_events_accepted_while_redis_is_down_are_processed_after(
        self,
        private_redis: RedisServer,
        database_url: str,
        engine: Engine,
        sandbox_server: SandboxServer,
        tmp_path: Path,
    ) -> None:
        config = tmp_path / "bridge.toml"
        config.write_text(CONFIG)
        settings = make_settings(
            database_url=database_url,
            redis_url=private_redis.url,
            sandbox_url=sandbox_server.url,
            config_path=config,
        )
        app = create_app(settings, engine=engine, serve_operator=True)
        with run_asgi(app) as url:
            bridge = Pipeline(settings, engine, url, sandbox_server)
            try:
                await bridge.post(one_off(0))
                private_redis.stop()
                responses = [await bridge.post(one_off(n)) for n in range(1, 4)]
                assert [r.status_code for r in responses] == [200, 200, 200]
                ready = await bridge.http.get(f"{app.state.operator.url}/readyz")
                assert ready.status_code == 503
                assert ready.json()["redis"].startswith("unavailable")

                # Redis comes back empty (it keeps nothing on disk): the relay, run at
                # worker start, queues what the database says is unfinished.
                private_redis.start()
                await bridge.drain()
            finally:
                await bridge.http.aclose()
        statuses = {i.id: i.status for i in bridge.intents().values()}
        assert set(statuses.values()) == {"done"}, statuses
        assert bridge.counts()["keys_created"] == 4
        assert bridge.counts()["events"] == 4


def _start_worker(settings: Settings, cwd: Path) -> subprocess.Popen[bytes]:
    """``cryptolens-bridge worker`` as a process of its own (stderr kept for the asserts)."""
    return subprocess.Popen(
        [sys.executable, "-m", "bridge", "worker"],
        env=_worker_env(settings),
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _worker_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "STRIPE_"))}
    env.update(
        BRIDGE_DATABASE_URL=settings.database_url,
        BRIDGE_REDIS_URL=settings.redis_url,
        BRIDGE_CONFIG=str(settings.config_path),
        CRYPTOLENS_API_URL=settings.cryptolens_api_url,
        CRYPTOLENS_TOKEN=settings.cryptolens_token.get_secret_value(),
        CRYPTOLENS_CONNECT_TIMEOUT="0.5",
        CRYPTOLENS_READ_TIMEOUT="3",
        # The shortest lease the settings accept for these timeouts: 2 x (0.5 + 3 + 1).
        BRIDGE_LEASE_SECONDS="9",
        BRIDGE_SETTLE_SECONDS="0",
        BRIDGE_RETRY_BASE_SECONDS="0.05",
        BRIDGE_RETRY_CAP_SECONDS="0.5",
        BRIDGE_LOG_LEVEL="WARNING",
    )
    return env


async def _wait_for(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


class TestWorkerCrash:
    async def test_worker_killed_mid_creation_is_finished_by_another_without_duplicate(
        self, bridge: Pipeline, tmp_path: Path
    ) -> None:
        # The sandbox applies each call and only then waits before answering: a worker
        # killed in that window leaves a key that Cryptolens has and the bridge does not.
        bridge.sandbox.set_faults(reply_delay_ms=2000)
        await bridge.post(sb.load("checkout.session.completed.payment"))
        worker = _start_worker(bridge.settings, tmp_path)
        try:
            await _wait_for(lambda: bridge.counts()["keys_created"] == 1, timeout=30)
        finally:
            worker.send_signal(signal.SIGKILL)
            _, stderr = worker.communicate(timeout=10)
            print(stderr.decode()[-3000:])
        assert worker.returncode == -signal.SIGKILL
        orphan = bridge.sandbox.state()["keys"][0]["key"]
        intents = bridge.intents()
        creating = intents[f"stripe:pi:{sb.ONE_OFF_PI}:create_key"]
        assert creating.status == "running"  # what the dead worker left behind

        bridge.sandbox.set_faults(reply_delay_ms=0)
        # The dead worker's lease (9 s) and arq's in-progress mark must run out first.
        await bridge.drain(
            functions=_short_timeout_functions(bridge.settings),
        )
        statuses = {i.id: (i.status, i.last_error) for i in bridge.intents().values()}
        assert {s for s, _ in statuses.values()} == {"done"}, statuses
        counts = bridge.counts()
        assert counts["keys_created"] == 1
        assert counts["events"] == 1
        # The key the dead worker never heard of was found in the Web API Log and claimed.
        assert creating.id in bridge.sandbox.state()["keys"][0]["notes"]
        assert bridge.intents()[creating.id].result is not None
        assert orphan in (bridge.intents()[creating.id].result or "")

    async def test_worker_stopped_mid_job_lets_it_finish(
        self, bridge: Pipeline, tmp_path: Path
    ) -> None:
        # Every call is applied, then answered 0.3 s later: a purchase's job takes seconds.
        bridge.sandbox.set_faults(reply_delay_ms=300)
        await bridge.post(sb.load("checkout.session.completed.payment"))
        worker = _start_worker(bridge.settings, tmp_path)
        try:
            await _wait_for(lambda: bridge.counts()["keys_created"] == 1, timeout=30)
            worker.send_signal(signal.SIGTERM)  # a deploy, mid-job
            _, stderr = worker.communicate(timeout=30)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()
        assert worker.returncode == 0, stderr.decode()[-3000:]
        assert b"Traceback" not in stderr
        # The job took no new work but finished what it had: the key tagged and linked to
        # its customer, the purchase registered, nothing left for another worker.
        statuses = {i.id: i.status for i in bridge.intents().values()}
        assert set(statuses.values()) == {"done"}, statuses
        counts = bridge.counts()
        assert (counts["keys_created"], counts["events"]) == (1, 1)


def _short_timeout_functions(settings: Settings) -> list[Any]:
    from arq.worker import func

    from bridge.core.queue import JOB_NAME
    from jobs.runner import run_intent

    return [func(run_intent, name=JOB_NAME, max_tries=1_000_000, timeout=5)]

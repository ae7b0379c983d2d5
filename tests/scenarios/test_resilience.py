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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from bridge.app import create_app
from bridge.core.intents import notes_tag
from bridge.core.settings import Settings
from tests.fixtures import stripe_builders as sb
from tests.fixtures import waiting
from tests.fixtures.pipeline import CONFIG, Pipeline, make_settings
from tests.fixtures.servers import SandboxServer, run_asgi
from tests.fixtures.stack import RedisServer, free_port


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


class TestWorkerThroughRedisOutage:
    async def test_the_worker_rides_out_redis_killed_mid_burst_and_restarted_empty(
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
        metrics_port = free_port()
        log_path = tmp_path / "worker.log"
        app = create_app(settings, engine=engine, serve_operator=True)
        with log_path.open("wb") as log_file, run_asgi(app) as url:
            env = _worker_env(settings) | {"BRIDGE_WORKER_METRICS_PORT": str(metrics_port)}
            worker = subprocess.Popen(
                [sys.executable, "-m", "bridge", "worker"],
                env=env,
                cwd=tmp_path,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
            )
            bridge = Pipeline(settings, engine, url, sandbox_server)

            def worker_log() -> str:
                return log_path.read_text()

            def worker_metric(name: str) -> float | None:
                try:
                    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
                except httpx.TransportError:
                    return None
                for family in text_string_to_metric_families(text):
                    for sample in family.samples:
                        if sample.name == name:
                            return float(sample.value)
                return None

            async def until(predicate: Any, timeout: float, what: str) -> None:
                try:
                    await waiting.until(predicate, timeout)
                except AssertionError:
                    raise AssertionError(f"{what}; worker: {worker_log()[-3000:]}") from None

            posted: list[int] = []

            async def purchases() -> None:
                for n in range(50):
                    posted.append((await bridge.post(one_off(n))).status_code)

            arriving = asyncio.create_task(purchases())
            try:
                # Killed while purchases arrive and the worker is making keys.
                await until(
                    lambda: len(posted) >= 10 and bridge.counts()["keys_created"] >= 1,
                    60,
                    "no key made",
                )
                private_redis.kill()
                await arriving
                assert posted == [200] * 50  # stored and acknowledged all the same
                # The webhook port says only "not ready"; the operator's address says why.
                assert (await bridge.http.get(f"{url}/readyz")).status_code == 503
                ready = await bridge.http.get(f"{app.state.operator.url}/readyz")
                assert ready.status_code == 503
                assert ready.json()["redis"].startswith("unavailable")
                assert ready.json()["redis_unavailable_seconds"] >= 0
                # The worker has seen the outage and waits it out.
                await until(lambda: "redis unavailable" in worker_log(), 60, "no outage logged")
                await until(lambda: worker_metric("bridge_redis_up") == 0, 60, "redis_up not 0")
                assert worker.poll() is None, worker_log()[-3000:]

                private_redis.start()  # empty: whatever was queued is gone
                await until(lambda: bridge.counts()["keys_created"] >= 50, 120, "keys missing")
                await until(
                    lambda: {i.status for i in bridge.intents().values()} == {"done"},
                    60,
                    "intents not done",
                )
                await until(lambda: worker_metric("bridge_redis_up") == 1, 60, "redis_up not 1")
                assert worker_metric("bridge_redis_outages_total") == 1
                assert (await bridge.http.get(f"{url}/readyz")).status_code == 200
                assert worker.poll() is None, worker_log()[-3000:]
            finally:
                arriving.cancel()
                await asyncio.gather(arriving, return_exceptions=True)
                await bridge.http.aclose()
                worker.send_signal(signal.SIGTERM)
                try:
                    worker.wait(30)
                finally:
                    if worker.poll() is None:
                        worker.kill()
                        worker.wait()
        logged = worker_log()
        assert worker.returncode == 0, logged[-3000:]
        assert "Traceback" not in logged, logged[-3000:]
        assert logged.count("redis unavailable") == 1, logged[-3000:]
        assert logged.count("redis available again") == 1, logged[-3000:]
        # Every purchase got its key exactly once, and its event once.
        counts = bridge.counts()
        assert (counts["keys_created"], counts["events"]) == (50, 50)
        assert len(bridge.sandbox.state()["keys"]) == 50


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
            await waiting.until(lambda: bridge.counts()["keys_created"] == 1, timeout=30)
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
        # The key the dead worker never heard of was found by the tag written into it.
        assert notes_tag(creating.id) in bridge.sandbox.state()["keys"][0]["notes"]
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
            await waiting.until(lambda: bridge.counts()["keys_created"] == 1, timeout=30)
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
